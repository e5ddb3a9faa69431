"""`agentbench train CONFIG`: trains, evaluates, and resumes from its output directory."""

from __future__ import annotations

import json
from pathlib import Path

from agentbench.cli import main
from agentbench.models import catalog
from agentbench.models.tiny import tiny_generator

CONFIG = """
model = "tiny"
env_id = "agentbench/GaussianBandit-v0"
env_kwargs = {{ n_arms = 2, horizon = 3, labels = "continuous" }}
num_envs = 2
episodes_per_update = 2
total_updates = {updates}
num_minibatches = 1
micro_batch_size = 4
cot = false
use_lora = true
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


def test_the_example_configs_are_valid() -> None:
    from agentbench.rlft import load_ppo_config

    examples = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))
    assert examples
    for path in examples:
        config = load_ppo_config(path)
        assert config.total_updates >= 1
