"""`agentbench reproduce`: published experiments, run at a small scale next to their numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentbench import reproduce
from agentbench.agent import factory
from agentbench.cli import main
from agentbench.reproduce import SCALES, builtin_experiments, load_experiment
from agentbench.rlft.run import training_config
from agentbench.suite import suite_from_dict
from agentbench.testing.planted import GreedyModel, KnowingButGreedyModel

EXPERIMENTS = sorted(builtin_experiments())


def test_the_published_experiments_are_all_there() -> None:
    assert sorted(EXPERIMENTS) == sorted([
        "cot-vs-no-cot", "exploration-mechanisms", "frequency-bias", "knowing-doing",
        "legal-actions", "mechanisms-in-rlft", "rlft-bandit", "rlft-tictactoe",
        "self-training-methods", "sparse-vs-dense", "thinking-budget", "cloning-vs-rlft",
    ])  # fmt: skip


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("scale", SCALES)
def test_every_experiment_builds_at_both_scales(name: str, scale: str) -> None:
    experiment = load_experiment(name)
    assert experiment.title and experiment.paper and experiment.note(scale)
    assert experiment.references and all(r.label and r.metric for r in experiment.references)
    table = experiment.table(scale, "my-model", runs=Path("out/train"))
    if experiment.kind == "train":
        for config in table["train"].values():
            _, checked = training_config(config)  # every key known, every value in range
            warm_starts = {f"out/train/{name}/model" for name in experiment.train}
            assert checked.model.name in {"my-model", *warm_starts}
        table = table["evaluate"]
        trained = {a["model"] for a in table["agents"] if isinstance(a, dict)} - {"my-model"}
        assert trained == {f"out/train/{name}/model" for name in experiment.train}
    if experiment.kind in ("suite", "train"):
        suite = suite_from_dict(table)  # envs and agents valid
        llm = [a for a in suite.agents if a["name"] == "llm"]
        assert llm and all(a["model"].startswith(("my-model", "out/train/")) for a in llm)
    else:
        assert table["probes"] and table["env"]


def test_a_suite_experiment_puts_our_numbers_next_to_the_published_ones(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(factory._GENERATORS, ("planted-greedy", ()), GreedyModel())
    out = tmp_path / "cot"
    assert main(["reproduce", "cot-vs-no-cot", "--model", "planted-greedy", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    reference = json.loads((out / "reference.json").read_text())
    assert reference["scale"] == "small" and "4 episodes per agent" in reference["note"]
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    cot = next(m for m in metrics if "cot=True" in m["agent"])
    (row,) = [r for r in reference["rows"] if r["label"] == "CoT" and r["metric"] == "coverage"]
    assert row["published"] == 0.40 and row["ours"] == [
        {"agent": cot["agent"], "env": cot["env_id"], "value": cot["coverage"]}
    ]
    assert cot["n_episodes"] == 4
    markdown = (out / "reference.md").read_text()
    assert "| CoT | coverage |" in markdown and "| 0.4 | Gemma2 2B" in markdown
    assert "Scale `small`: 4 episodes per agent" in markdown
    assert (out / "report" / "report.md").is_file()


def test_a_probe_experiment_reads_its_numbers_from_the_probe(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(factory._GENERATORS, ("planted-knowing", ()), KnowingButGreedyModel())
    out = tmp_path / "kd"
    assert main(["reproduce", "knowing-doing", "--model", "planted-knowing", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    probe = json.loads((out / "analysis" / "knowing_doing.json").read_text())
    assert probe["n"] == 32  # the small scale
    rows = {r["label"]: r for r in json.loads((out / "reference.json").read_text())["rows"]}
    assert rows["knowing"]["ours"][0]["value"] == probe["knowing_rate"] == 1.0
    greedy = rows["doing greedy (% of all actions)"]["ours"][0]["value"]
    assert greedy == pytest.approx(probe["table"]["correct"]["greedy"]) and greedy > 50
    assert rows["knowing"]["published"] == 0.87


def test_reproduce_lists_and_refuses_unknown_names(tmp_path: Path, capsys) -> None:
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in EXPERIMENTS)
    assert main(["reproduce", "no-such-experiment", "--out", str(tmp_path / "x")]) == 2
    assert "unknown experiment 'no-such-experiment'" in capsys.readouterr().err
    assert main(["reproduce", "rlft-bandit", "--base-url", "http://localhost:1/v1",
                 "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    assert "needs its weights here" in capsys.readouterr().err


TRAIN_EXPERIMENT = """
title = "tiny RLFT"
description = "PPO on a 2-arm bandit, before and after."
paper = "none"
kind = "train"
paired_reference = "model={model},"

[train.ppo]
model = { name = "{model}", use_lora = true }
env = { id = "agentbench/GaussianBandit-v0", kwargs = { n_arms = 2, horizon = 3 } }
agent = { cot = false }
num_envs = 2
episodes_per_update = 2
total_updates = 9
num_minibatches = 1
micro_batch_size = 4
warmup_steps = 0
eval_every = 0

[evaluate]
episodes = 4
seed = 5000
agents = [
    "ucb",
    { name = "llm", model = "{model}", cot = false },
    { name = "llm", model = "{run:ppo}", cot = false },
]
envs = [{ id = "agentbench/GaussianBandit-v0", kwargs = { n_arms = 2, horizon = 3 } }]

[scale.small]
note = "one update"
train.ppo = { total_updates = 1 }

[scale.paper]
note = "nine updates"

[[reference]]
label = "after"
agent = "train/ppo/model"
metric = "final_regret"
"""


def test_a_training_experiment_trains_exports_and_evaluates_against_the_start(
    tmp_path: Path, monkeypatch
) -> None:
    from agentbench.models import catalog
    from agentbench.models.tiny import tiny_generator

    real = catalog.resolve_model

    def resolve(name: str, **kwargs):  # "tiny": a tiny model; a trained one: loaded by path
        return tiny_generator(seed=1, dtype="float32") if name == "tiny" else real(name, **kwargs)

    monkeypatch.setattr(catalog, "resolve_model", resolve)
    trims: list[int] = []  # the evaluation must not start on the training's heap
    monkeypatch.setattr(reproduce, "trim_freed_memory", lambda: trims.append(1))
    experiment = tmp_path / "tiny-rlft.toml"
    experiment.write_text(TRAIN_EXPERIMENT)
    out = tmp_path / "out"
    assert main(["reproduce", str(experiment), "--model", "tiny", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    assert trims == [1]  # once, after the one training run
    metrics = (out / "train" / "ppo" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1  # the small scale's one update
    assert (out / "train" / "ppo" / "model" / "model.safetensors").is_file()
    episodes = json.loads((out / "run" / "metrics.json").read_text())
    agents = sorted(row["agent"] for row in episodes)
    trained = str(out / "train" / "ppo" / "model")
    assert agents == sorted(["ucb", "llm(model=tiny,cot=False)",
                             f"llm(model={trained},cot=False)"])  # fmt: skip
    paired = json.loads((out / "paired.json").read_text())
    assert {p["agent"] for p in paired} == {"ucb", f"llm(model={trained},cot=False)"}
    assert all(p["reference"] == "llm(model=tiny,cot=False)" for p in paired)
    (row,) = json.loads((out / "reference.json").read_text())["rows"]
    assert row["ours"][0]["agent"] == f"llm(model={trained},cot=False)"


def test_a_run_can_start_from_an_earlier_runs_model_only(tmp_path: Path, monkeypatch) -> None:
    from agentbench.models import catalog
    from agentbench.models.tiny import tiny_generator

    real = catalog.resolve_model

    def resolve(name: str, **kwargs):
        return tiny_generator(seed=1, dtype="float32") if name == "tiny" else real(name, **kwargs)

    monkeypatch.setattr(catalog, "resolve_model", resolve)
    warm = TRAIN_EXPERIMENT.replace(
        '[train.ppo]\nmodel = { name = "{model}", use_lora = true }',
        '[train.bc]\nmethod = "cloning"\nepisodes = 1\nhistory_length = 2\n'
        'model = { name = "{model}", use_lora = true }\n'
        'env = { id = "agentbench/GaussianBandit-v0", kwargs = { n_arms = 2, horizon = 3 } }\n'
        "sft = { batch_size = 2, micro_batch_size = 2 }\n\n"
        '[train.ppo]\nmodel = { name = "{run:bc}", use_lora = true }',
    )
    assert warm != TRAIN_EXPERIMENT
    experiment = tmp_path / "warm.toml"
    experiment.write_text(warm)
    out = tmp_path / "out"
    assert main(["reproduce", str(experiment), "--model", "tiny", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    sft = json.loads((out / "train" / "bc" / "sft.json").read_text())
    assert sft["examples"] == 3  # one expert episode of 3 steps
    config = json.loads((out / "train" / "ppo" / "config.json").read_text())
    assert config["model"]["name"] == str(out / "train" / "bc" / "model")
    # a run may not start from one written after it
    experiment.write_text(warm.replace("{run:bc}", "{run:later}") + "\n[train.later]\n")
    assert main(["reproduce", str(experiment), "--model", "tiny", "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2  # fmt: skip
