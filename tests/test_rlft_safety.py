"""Training refuses what cannot work: every float setting finite and in range, an
unreadable TOML named in one line, and a non-finite loss or gradient norm never
reaching the weights (PPO and the cross-entropy loop of SFT, expert iteration and
return-conditioned training)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fixed_bandits import learning_threads

from agentbench.agent.llm import LLMAgentSettings
from agentbench.errors import ConfigError
from agentbench.io import read_toml
from agentbench.models.packing import PackedLogprobs
from agentbench.models.tiny import tiny_generator
from agentbench.rlft import (
    ExpertIteration,
    ExpertIterationConfig,
    PPOConfig,
    ReturnConditionedConfig,
    load_ppo_config,
    ppo,
)
from agentbench.rlft.checkpoint import latest_checkpoint
from agentbench.rlft.config import EnvSettings, ModelSettings, float_fields
from agentbench.rlft.nonfinite import NonFiniteTrainingError
from agentbench.rlft.ppo import PPOTrainer, ppo_token_losses
from agentbench.rlft.sft import SFTConfig, train_on_targets

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
    with pytest.raises(ConfigError, match=r"^\[model\] lora_alpha must be at least 1, got 0$"):
        PPOConfig(model=ModelSettings(lora_alpha=0))
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
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        read_toml(tmp_path)


# ---------------------------------------------------------------- non-finite steps


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    with learning_threads():
        yield


def _ppo_config(output_dir: Path, **changes: Any) -> PPOConfig:
    values: dict[str, Any] = dict(
        env=EnvSettings(
            "agentbench/GaussianBandit-v0", {"n_arms": 2, "horizon": 3, "labels": "continuous"}
        ),
        num_envs=4,
        episodes_per_update=4,
        total_updates=2,
        num_minibatches=2,  # 4 episodes of 3 steps: minibatches of 2 episodes, 6 steps
        micro_batch_size=4,
        update_epochs=2,  # 4 optimizer steps per update, 2 loss calls each
        agent=LLMAgentSettings(cot=False),
        optimizer="adamw",
        learning_rate=1e-3,
        warmup_steps=1,
        eval_every=0,
        checkpoint_every=1,
        output_dir=str(output_dir),
        progress=False,
    )
    values.update(changes)
    return PPOConfig(**values)


def _parameters(model: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("packed", [False, True], ids=["per-row", "packed"])
def test_ppo_skips_a_nan_loss_step_and_the_weights_stay_unchanged_by_it(
    tmp_path, monkeypatch, packed
):
    # per-row: 2 loss calls per optimizer step (micro-batches of 4 + 2 steps); packed: a
    # minibatch of 2 episodes of 3 steps is one forward pass (two tries)
    per_step = 1 if packed else 2
    trainer = PPOTrainer(_ppo_config(tmp_path, packed=packed), tiny_generator(seed=0))
    calls, seen = [0], {}

    def losses(*args: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        calls[0] += 1
        token_losses, stats = ppo_token_losses(*args)
        seen[calls[0]] = _parameters(trainer.model)
        if calls[0] == per_step + 1:  # the first micro-batch of update 1's second step
            token_losses = token_losses * math.nan
        return token_losses, stats

    monkeypatch.setattr(ppo, "ppo_token_losses", losses)
    with pytest.warns(RuntimeWarning, match="ppo update 1, optimizer step 2: non-finite"):
        records = trainer.train()
    assert calls[0] == 8 * per_step
    assert [r["skipped_steps"] for r in records] == [1, 0]
    step2, step3, step4 = (1 + per_step * k for k in (1, 2, 3))  # first calls of those steps
    assert _same(seen[step2], seen[step3])  # the skipped step left the weights as they were
    assert not _same(seen[step3], seen[step4])  # ... while the next one moved them
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(torch.isfinite(v).all() for v in trainer.optimizer.state_dict()["state"][0].values())


def test_ppo_stops_when_a_nan_reward_makes_every_step_of_an_update_non_finite(tmp_path):
    class NaNRewardAtUpdate2(PPOTrainer):
        def step_rewards(self, batch: Any) -> list[Any]:
            rewards = super().step_rewards(batch)
            if self.update == 1:
                rewards[0][-1] = math.nan
            return rewards

    trainer = NaNRewardAtUpdate2(_ppo_config(tmp_path), tiny_generator(seed=0))
    after_update_1: list[torch.Tensor] = []
    save = trainer.save

    def remember() -> Path:
        after_update_1[:] = _parameters(trainer.model)
        return save()

    trainer.save = remember  # type: ignore[method-assign]
    with pytest.raises(NonFiniteTrainingError, match="^ppo update 2: all 4 optimizer steps"):
        with pytest.warns(RuntimeWarning):
            trainer.train()
    assert _same(after_update_1, _parameters(trainer.model))
    assert latest_checkpoint(tmp_path).name == "update_000001"  # no NaN checkpoint


def _pairs(n: int) -> tuple[list[list[int]], list[list[int]]]:
    prompts = [[5 + i % 7, 9, 11 + i % 3] for i in range(n)]
    targets = [[20 + i % 5, 21] for i in range(n)]
    return prompts, targets


def _poisoned(generator: Any, poison: Any) -> list[list[torch.Tensor]]:
    """Make the ``poison(call)`` calls of ``sequence_logprobs`` / ``packed_logprobs`` (the
    per-row and packed forward passes) NaN; returns the weights seen at every call."""
    per_row, packed, seen = generator.sequence_logprobs, generator.packed_logprobs, []

    def sequence_logprobs(*args: Any, **kwargs: Any) -> list[torch.Tensor]:
        seen.append(_parameters(generator.model))
        result = per_row(*args, **kwargs)
        return [r * math.nan for r in result] if poison(len(seen)) else result

    def packed_logprobs(*args: Any, **kwargs: Any) -> PackedLogprobs:
        seen.append(_parameters(generator.model))
        result = packed(*args, **kwargs)
        if poison(len(seen)):
            result.logprobs = [r * math.nan for r in result.logprobs]
        return result

    generator.sequence_logprobs = sequence_logprobs
    generator.packed_logprobs = packed_logprobs
    return seen


def test_train_on_targets_skips_a_nan_step_and_counts_it():
    generator = tiny_generator(seed=0)
    generator.model.requires_grad_(True)
    seen = _poisoned(generator, lambda call: call == 2)
    config = SFTConfig(learning_rate=1e-3, batch_size=4, micro_batch_size=4, epochs=2)
    with pytest.warns(RuntimeWarning, match="sft epoch 1, step 2: non-finite"):
        records = train_on_targets(generator, *_pairs(12), config)  # 3 steps per epoch
    assert [r["skipped_steps"] for r in records] == [1, 0]
    assert [r["steps"] for r in records] == [3, 6]
    assert _same(seen[1], seen[2])  # before and after the skipped step
    assert not _same(seen[2], seen[3])
    assert all(torch.isfinite(p).all() for p in generator.model.parameters())


def test_train_on_targets_stops_when_every_step_of_an_epoch_is_non_finite():
    generator = tiny_generator(seed=0)
    generator.model.requires_grad_(True)
    before = _parameters(generator.model)
    _poisoned(generator, lambda call: True)
    config = SFTConfig(learning_rate=1e-3, batch_size=4, micro_batch_size=2)
    with pytest.raises(NonFiniteTrainingError, match="^sft epoch 1: all 3 optimizer steps"):
        with pytest.warns(RuntimeWarning):
            train_on_targets(generator, *_pairs(12), config)
    assert _same(before, _parameters(generator.model))


def test_expert_iteration_logs_skipped_steps(tmp_path, monkeypatch):
    generator = tiny_generator(seed=0)
    generator.model.requires_grad_(True)
    config = ExpertIterationConfig(
        env=EnvSettings(
            "agentbench/GaussianBandit-v0", {"n_arms": 2, "horizon": 3, "labels": "continuous"}
        ),
        iterations=1,
        train_episodes=4,
        samples_per_seed=2,
        agent=LLMAgentSettings(cot=False),
        sft=SFTConfig(learning_rate=1e-3, batch_size=4, epochs=2),
    )
    trainer = ExpertIteration(config, generator)
    original = trainer.collect

    def collect(iteration: int) -> Any:
        sampled = original(iteration)
        _poisoned(generator, lambda call: call == 1)  # from the fine-tuning on
        return sampled

    trainer.collect = collect  # type: ignore[method-assign]
    with pytest.warns(RuntimeWarning, match="expert iteration epoch 1, step 1"):
        (record,) = trainer.train()
    assert record["skipped_steps"] == 1 and math.isfinite(record["loss"])
