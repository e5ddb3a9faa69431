"""Training refuses what cannot work: every float setting finite and in range, an
unreadable TOML named in one line, and a non-finite loss or gradient norm never
reaching the weights (PPO and the cross-entropy loop of SFT, expert iteration and
return-conditioned training)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agentbench.errors import ConfigError
from agentbench.rlft import (
    ExpertIterationConfig,
    PPOConfig,
    ReturnConditionedConfig,
    load_ppo_config,
)
from agentbench.rlft.config import float_fields, read_toml
from agentbench.rlft.sft import SFTConfig

CONFIGS = [PPOConfig, SFTConfig, ExpertIterationConfig, ReturnConditionedConfig]


# ---------------------------------------------------------------- float settings


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_every_float_setting_rejects_non_finite_values(cls: type, bad: float):
    names = float_fields(cls)
    assert names  # the walk finds the float settings
    for name in names:
        with pytest.raises(
            ConfigError, match=rf"^{name} must be a finite number in .*, got {bad}$"
        ):
            cls(**{name: bad})


@pytest.mark.parametrize(
    ("cls", "name", "value", "accepted"),
    [
        (PPOConfig, "kl_beta", -0.1, "[0, inf)"),
        (PPOConfig, "invalid_penalty", 5.0, "(-inf, 0]"),
        (PPOConfig, "weight_decay", -1.0, "[0, inf)"),
        (PPOConfig, "gamma", 1.5, "[0, 1]"),
        (PPOConfig, "reward_scale", 0.0, "(0, inf)"),
        (SFTConfig, "max_grad_norm", 0.0, "(0, inf)"),
        (SFTConfig, "weight_decay", -0.5, "[0, inf)"),
        (ExpertIterationConfig, "exploration_bonus", -1.0, "[0, inf)"),
        (ReturnConditionedConfig, "quantile", -0.1, "[0, 1]"),
    ],
)
def test_out_of_range_floats_name_the_field_value_and_range(
    cls: type, name: str, value: float, accepted: str
):
    with pytest.raises(ConfigError) as error:
        cls(**{name: value})
    assert str(error.value) == f"{name} must be a finite number in {accepted}, got {value}"


def test_the_documented_defaults_and_none_thresholds_are_accepted():
    for cls in CONFIGS:
        cls()
    assert ReturnConditionedConfig(threshold=None).threshold is None
    assert PPOConfig(invalid_penalty=0, kl_beta=0).invalid_penalty == 0.0


def test_lora_alpha_and_non_numbers_are_refused():
    with pytest.raises(ConfigError, match="^lora_alpha must be at least 1, got 0$"):
        PPOConfig(lora_alpha=0)
    with pytest.raises(ConfigError, match=r"^weight_decay = 'x' is not a number; accepted is \[0"):
        SFTConfig(weight_decay="x")


def test_inf_and_nan_from_toml_are_refused(tmp_path: Path):
    path = tmp_path / "ppo.toml"
    path.write_text("kl_beta = inf\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"^kl_beta must be a finite number in \[0, inf\), got inf"
    ):
        load_ppo_config(path)
    path.write_text("invalid_penalty = nan\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="^invalid_penalty must be a finite number"):
        load_ppo_config(path)


def test_a_non_utf8_toml_is_one_line_naming_the_file(tmp_path: Path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('env_id = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as error:
        load_ppo_config(path)
    message = str(error.value)
    assert str(path) in message and "UTF-8" in message and "\n" not in message
    with pytest.raises(ConfigError, match="cannot be read"):
        read_toml(tmp_path)  # a directory
