"""Settings declared once with their help, one loader, and the CLI pages that print them."""

from __future__ import annotations

import dataclasses

import pytest

from agentbench.agent.llm import LLMAgentSettings, settings_from_dict
from agentbench.cli import main
from agentbench.errors import ConfigError
from agentbench.rlft.config import EnvSettings, ModelSettings, PPOConfig, ppo_config_from_dict
from agentbench.rlft.expert_iteration import ExpertIterationConfig
from agentbench.rlft.return_conditioned import ReturnConditionedConfig
from agentbench.rlft.sft import SFTConfig
from agentbench.settings import HELP, config_from_dict, setting, settings_help_text

CONFIGS = [LLMAgentSettings, PPOConfig, SFTConfig, ExpertIterationConfig, ReturnConditionedConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
def test_every_setting_declares_its_help(cls):
    for field in dataclasses.fields(cls):
        if field.init:
            assert len(field.metadata.get(HELP, "")) >= 8, f"{cls.__name__}.{field.name}"


def test_a_setting_without_help_is_refused():
    with pytest.raises(TypeError, match="needs its help"):
        setting(1)


def test_the_loader_names_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigError, match=r"unknown LLM agent settings \['cott'\]"):
        settings_from_dict({"cott": True})
    with pytest.raises(ConfigError, match="budget = '64' has the wrong type; expected int"):
        settings_from_dict({"budget": "64"})
    with pytest.raises(ConfigError, match="epochs = 1.5 has the wrong type; expected int"):
        config_from_dict(SFTConfig, {"epochs": 1.5}, "SFT")
    settings = settings_from_dict({"temperature": 1, "history_length": "all"})
    assert settings.temperature == 1.0 and isinstance(settings.temperature, float)
    assert settings.history_length is None


def test_train_help_prints_every_setting_with_its_default_and_help(capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["train", "--help"])
    assert exit_code.value.code == 0
    page = capsys.readouterr().out
    for cls in (PPOConfig, ExpertIterationConfig, ReturnConditionedConfig, SFTConfig):
        for field in dataclasses.fields(cls):
            if field.init and field.name != "sft":
                assert f"\n  {field.name} = " in page, f"{cls.__name__}.{field.name}"
    assert "  kl_beta = 0.05\n" in page
    help_words = dataclasses.fields(PPOConfig)[0].metadata[HELP].split()
    assert " ".join(help_words[:4]) in page
    assert settings_help_text(PPOConfig) in page


def test_sft_options_take_their_defaults_from_the_config(capsys):
    with pytest.raises(SystemExit):
        main(["sft", "--help"])
    page = " ".join(capsys.readouterr().out.split())
    defaults = SFTConfig()
    assert f"passes over the examples (default: {defaults.epochs})" in page
    assert f"(gradient accumulation) (default: {defaults.micro_batch_size})" in page
    assert "--learning-rate X, --lr X" in page


def test_the_agent_settings_are_one_nested_table_of_every_training_config():
    config = config_from_dict(
        PPOConfig, {"agent": {"cot": False, "history_length": "all", "summary": True}}, "PPO"
    )
    assert config.agent == LLMAgentSettings(cot=False, history_length=None, summary=True)
    assert config.agent_settings(temperature=0.0) == dataclasses.replace(
        config.agent, temperature=0.0
    )
    ei = config_from_dict(
        ExpertIterationConfig, {"agent": {"budget": 64}, "sft": {"epochs": 2}}, "EI"
    )
    assert ei.agent.budget == 64 and ei.sft.epochs == 2
    assert ei.agent_settings(return_token="good").return_token == "good"
    # the agent's fields live in LLMAgentSettings only
    for cls in (PPOConfig, ExpertIterationConfig, ReturnConditionedConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        assert not names & {"cot", "budget", "history_length", "env_id", "env_kwargs", "use_lora"}
        loaded = config_from_dict(cls, {"model": {"name": "m", "use_lora": True}}, "x").model
        assert loaded == ModelSettings("m", use_lora=True)
        assert config_from_dict(cls, {"env": {"id": "e", "kwargs": {"k": 1}}}, "x").env == (
            EnvSettings("e", {"k": 1})
        )


def test_training_configs_point_moved_and_untrainable_agent_settings_out():
    with pytest.raises(ConfigError, match=r"^cot, budget now belong in the \[agent\] table"):
        ppo_config_from_dict({"cot": False, "budget": 8})
    with pytest.raises(ConfigError, match=r"^env_id now belongs in the \[env\] table"):
        ppo_config_from_dict({"env_id": "agentbench/TicTacToe-v0"})
    with pytest.raises(ConfigError, match=r"^use_lora, lora_r now belong in the \[model\] table"):
        ppo_config_from_dict({"use_lora": True, "lora_r": 4})
    with pytest.raises(ConfigError, match=r"^model is a \[model\] table now: write \[model\] name"):
        ppo_config_from_dict({"model": "smollm2-135m-instruct"})
    with pytest.raises(ConfigError, match=r"unknown \[model\] settings \['lora_rank'\]"):
        ppo_config_from_dict({"model": {"lora_rank": 4}})
    with pytest.raises(ConfigError, match=r"^\[model\] lora_dropout must be in \[0, 1\)"):
        ppo_config_from_dict({"model": {"lora_dropout": 1.0}})
    with pytest.raises(ConfigError, match=r"agent must be a \[agent\] table"):
        ppo_config_from_dict({"agent": "llm"})
    with pytest.raises(ConfigError, match=r"unknown \[agent\] settings \['cott'\]"):
        ppo_config_from_dict({"agent": {"cott": False}})
    for mechanism in ({"try_all": True}, {"epsilon": 0.1}, {"self_consistency": 4}):
        with pytest.raises(ConfigError, match="is not supported in this trainer"):
            config_from_dict(ReturnConditionedConfig, {"agent": mechanism}, "RC")
    # PPO trains the generation an answer came from: the chosen sample, the second pass
    for mechanism in ({"self_consistency": 4}, {"self_correction": True}):
        assert ppo_config_from_dict({"agent": mechanism}).agent == LLMAgentSettings(**mechanism)
        with pytest.raises(ConfigError, match=r"not supported in this trainer \(PPO trains"):
            config_from_dict(ReturnConditionedConfig, {"agent": mechanism}, "RC")
    # PPO leaves template steps out of its loss; GAE would need their values
    for mechanism in ({"try_all": True}, {"epsilon": 0.1}):
        assert ppo_config_from_dict({"agent": mechanism}).advantage == "mc"
        with pytest.raises(ConfigError, match=r"not supported in this trainer \(PPO with advan"):
            ppo_config_from_dict({"agent": mechanism, "advantage": "gae"})
    # PPO masks a forced answer's template prefix; the self-trainers refuse forcing
    assert ppo_config_from_dict({"agent": {"answer_forcing": True}}).agent.answer_forcing
    with pytest.raises(ConfigError, match=r"answer_forcing .*\(PPO trains forced answers\)"):
        config_from_dict(ReturnConditionedConfig, {"agent": {"answer_forcing": True}}, "RC")
