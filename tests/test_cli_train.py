"""`agentbench train CONFIG`: trains, evaluates, and resumes from its output directory."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from agentbench.cli import main
from agentbench.models import catalog
from agentbench.models.tiny import tiny_generator

CONFIG = """
model = {{ name = "tiny", use_lora = true }}
env.id = "agentbench/GaussianBandit-v0"
env.kwargs = {{ n_arms = 2, horizon = 3, labels = "continuous" }}
num_envs = 2
episodes_per_update = 2
total_updates = {updates}
num_minibatches = 1
micro_batch_size = 4
agent = {{ cot = false }}
warmup_steps = 0
eval_every = 0
eval_episodes = 2
progress = false
output_dir = "{out}"
"""


def test_train_command_runs_evaluates_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    def tiny(name: str, **kwargs: object):
        return tiny_generator(seed=1, dtype="float32")

    monkeypatch.setattr(catalog, "resolve_model", tiny)
    out = tmp_path / "ppo"
    config = tmp_path / "ppo.toml"
    config.write_text(CONFIG.format(updates=1, out=out))
    assert main(["train", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "held-out evaluation after 1 updates" in printed and "invalid_rate" in printed
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "kl" in json.loads(lines[0])
    # The same command again resumes the finished run from its checkpoint: no update is
    # repeated (an interrupted run continues where its last checkpoint left it; the exact
    # continuation itself is tested in test_rlft.py).
    assert main(["train", str(config)]) == 0
    again = capsys.readouterr().out
    assert "resuming the run" in again and "after 1 updates" in again
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    config.write_text("totally_unknown_key = 1\n")
    assert main(["train", str(config)]) == 2
    assert "totally_unknown_key" in capsys.readouterr().err


def test_a_run_that_evaluated_its_last_update_is_not_evaluated_again(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from agentbench.rlft import PPOTrainer

    monkeypatch.setattr(catalog, "resolve_model", lambda name, **kw: tiny_generator(seed=1))
    calls = []
    evaluate = PPOTrainer.evaluate

    def counted(self, *args, **kwargs):
        calls.append(self.update)
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(PPOTrainer, "evaluate", counted)
    config = tmp_path / "ppo.toml"
    text = CONFIG.format(updates=2, out=tmp_path / "ppo").replace(
        "eval_every = 0", "eval_every = 2"
    )
    config.write_text(text)
    assert main(["train", str(config)]) == 0
    assert calls == [0, 2]  # before training and after the last update: printed, not redone
    printed = capsys.readouterr().out
    assert "held-out evaluation after 2 updates" in printed


def test_the_example_configs_are_valid() -> None:
    from agentbench.rlft import load_ppo_config

    configs = Path(__file__).parents[1] / "configs"
    examples = sorted([*configs.glob("*.toml"), *(configs / "rlft").glob("*.toml")])
    assert examples
    for path in examples:
        config = load_ppo_config(path)
        assert config.total_updates >= 1
    from agentbench.suite import load_suite

    suites = sorted((Path(__file__).parents[1] / "configs" / "suites").glob("*.toml"))
    for path in suites:
        load_suite(str(path)).validate()


def test_sft_command_writes_a_model_that_loads_by_path(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(catalog, "resolve_model", lambda name, **kw: tiny_generator(seed=1))
    out = tmp_path / "sft-model"
    argv = ["sft", "--model", "tiny", "--env", "agentbench/GaussianBandit-v0",
            "--env-arg", "n_arms=2", "--env-arg", "horizon=3", "--episodes", "2",
            "--epochs", "1", "--history-length", "all", "--lora", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "6 expert examples from 2 UCB episodes" in capsys.readouterr().out
    record = json.loads((out / "sft.json").read_text())
    assert record["epochs"][0]["steps"] == 1 and record["args"]["mode"] == "behaviour"
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    monkeypatch.undo()
    loaded = catalog.resolve_model(str(out), dtype="float32")
    trained = loaded.model.state_dict()
    untouched = tiny_generator(seed=1).model.state_dict()
    assert set(trained) == set(untouched)  # LoRA merged: a plain model
    assert any(not torch.equal(trained[k], untouched[k]) for k in trained)
    assert main(argv[:-1] + [str(tmp_path / "x"), "--env-arg", "horizon"]) == 2
    assert "not KEY=VALUE" in capsys.readouterr().err


SELF_TRAINING = """
method = "{method}"
model = {{ name = "tiny" }}
env.id = "agentbench/GaussianBandit-v0"
env.kwargs = {{ n_arms = 2, horizon = 3, labels = "continuous" }}
iterations = 1
agent = {{ cot = false }}
num_envs = 4
eval_episodes = 2
output_dir = "{out}"
{extra}

[sft]
batch_size = 4
"""


def test_train_command_runs_expert_iteration_and_return_conditioned(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(catalog, "resolve_model", lambda name, **kw: tiny_generator(seed=1))
    extras = {
        "expert-iteration": "train_episodes = 2\nsamples_per_seed = 2",
        "return-conditioned": "episodes_per_iteration = 4",
    }
    for method, extra in extras.items():
        out = tmp_path / method
        config = tmp_path / f"{method}.toml"
        config.write_text(SELF_TRAINING.format(method=method, out=out, extra=extra))
        assert main(["train", str(config), "--export", str(tmp_path / f"{method}-model")]) == 0
        printed = capsys.readouterr().out
        assert "held-out evaluation after 1 iterations" in printed, printed
        (line,) = (out / "metrics.jsonl").read_text().splitlines()
        assert json.loads(line)["iteration"] == 1
        assert (tmp_path / f"{method}-model" / "model.safetensors").is_file()
        # The same command again resumes the finished run from its checkpoint.
        assert main(["train", str(config)]) == 0
        again = capsys.readouterr().out
        assert "resuming the run" in again and "after 1 iterations" in again
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    config.write_text(SELF_TRAINING.format(method="expert-iteration", out=out, extra="bogus = 1"))
    assert main(["train", str(config)]) == 2
    assert "bogus" in capsys.readouterr().err
    config.write_text('method = "dpo"\n')
    assert main(["train", str(config)]) == 2
    assert "'dpo' is not one of ppo" in capsys.readouterr().err


def test_train_command_resumes_past_a_damaged_checkpoint(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(catalog, "resolve_model", lambda name, **kw: tiny_generator(seed=1))
    out = tmp_path / "ppo"
    config = tmp_path / "ppo.toml"
    config.write_text(CONFIG.format(updates=2, out=out) + "checkpoint_every = 1\n")
    assert main(["train", str(config)]) == 0
    capsys.readouterr()
    damaged = out / "checkpoints" / "update_000002" / "adapter_model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.warns(UserWarning, match="resuming from .*update_000001"):
        assert main(["train", str(config)]) == 0
    assert "after 2 updates" in capsys.readouterr().out
    for update in (1, 2):
        (out / "checkpoints" / f"update_00000{update}" / "rng.json").write_text("{")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", str(config)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "holds no intact checkpoint" in line and "rng.json" in line
