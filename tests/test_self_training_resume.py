"""SFT, expert iteration and return-conditioned training checkpoint like PPO: a run
killed after epoch / iteration k and resumed ends bit-for-bit where the uninterrupted
run ends (cf. test_rlft.py::test_resume_after_kill_continues_exactly)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fixed_bandits import learning_threads

from agentbench.agent.llm import LLMAgentSettings
from agentbench.errors import ConfigError
from agentbench.models.tiny import tiny_generator
from agentbench.rlft import (
    ExpertIteration,
    ExpertIterationConfig,
    ReturnConditioned,
    ReturnConditionedConfig,
)
from agentbench.rlft.checkpoint import latest_checkpoint
from agentbench.rlft.config import EnvSettings
from agentbench.rlft.policy import add_lora
from agentbench.rlft.sft import SFTConfig, train_on_targets

ENV = "agentbench/GaussianBandit-v0"
ENV_KWARGS = {"n_arms": 2, "horizon": 3, "labels": "continuous"}


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    with learning_threads():
        yield


class Killed(Exception):
    pass


def _starting_model(lora: bool) -> Any:
    generator = tiny_generator(seed=0)
    if lora:
        generator.model = add_lora(generator.model, r=4, alpha=8, dropout=0.1, seed=0)
    else:
        generator.model.requires_grad_(True)
    return generator


def _assert_same_weights(a: Any, b: Any) -> None:
    named_a, named_b = list(a.named_parameters()), list(b.named_parameters())
    assert [n for n, _ in named_a] == [n for n, _ in named_b]
    for (name, x), (_, y) in zip(named_a, named_b, strict=True):
        assert torch.equal(x, y), name
    start = _starting_model(lora=hasattr(a, "peft_config")).model
    assert any(
        not torch.equal(x, y) for x, y in zip(start.parameters(), a.parameters(), strict=True)
    )


def _without_seconds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _checkpoint_files(output_dir: Path) -> set[str]:
    files = [p for p in (output_dir / "checkpoints").rglob("*") if p.is_file()]
    return {p.suffix for p in files}


# ---------------------------------------------------------------- SFT


def _pairs() -> tuple[list[list[int]], list[list[int]]]:
    prompts = [[5 + i % 7, 9, 11 + i % 3] for i in range(12)]
    targets = [[20 + i % 5, 21, 22 + i % 2] for i in range(12)]
    return prompts, targets


SFT = SFTConfig(learning_rate=1e-3, lr_min=1e-4, warmup_steps=1, batch_size=4,
                micro_batch_size=2, epochs=3, max_examples=10, seed=7)  # fmt: skip


def _killed_at_call(generator: Any, call: int) -> None:
    """Kill the run at the ``call``-th forward pass (per-row or packed)."""
    calls = [0]

    def killing(original: Any) -> Any:
        def forward(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == call:
                raise Killed
            return original(*args, **kwargs)

        return forward

    generator.sequence_logprobs = killing(generator.sequence_logprobs)
    generator.packed_logprobs = killing(generator.packed_logprobs)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-dropout"])
def test_sft_killed_after_an_epoch_resumes_exactly(tmp_path: Path, lora: bool):
    straight = _starting_model(lora)
    straight_records = train_on_targets(straight, *_pairs(), SFT, output_dir=tmp_path / "a")

    killed = _starting_model(lora)
    _killed_at_call(killed, 6 + 2)  # 10 examples: 3 steps of 2 micro-batches per epoch
    with pytest.raises(Killed):
        train_on_targets(killed, *_pairs(), SFT, output_dir=tmp_path / "b")
    assert latest_checkpoint(tmp_path / "b").name == "epoch_000001"
    with pytest.raises(ConfigError, match="already holds SFT checkpoints"):
        train_on_targets(_starting_model(lora), *_pairs(), SFT, output_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="other SFT settings \\['learning_rate'\\]"):
        other = SFTConfig(**{**SFT.__dict__, "learning_rate": 2e-3})
        train_on_targets(_starting_model(lora), *_pairs(), other, output_dir=tmp_path / "b",
                         resume=True)  # fmt: skip
    resumed = _starting_model(lora)
    records = train_on_targets(resumed, *_pairs(), SFT, output_dir=tmp_path / "b", resume=True)

    _assert_same_weights(straight.model, resumed.model)
    assert _without_seconds(records) == _without_seconds(straight_records)
    assert _checkpoint_files(tmp_path / "b") <= {".safetensors", ".json", ".md"}


def test_sft_resume_refuses_other_examples(tmp_path: Path):
    train_on_targets(_starting_model(False), *_pairs(), SFT, output_dir=tmp_path)
    prompts, targets = _pairs()
    targets[0] = [30]
    with pytest.raises(ConfigError, match="written for other examples"):
        train_on_targets(_starting_model(False), prompts, targets, SFT, output_dir=tmp_path,
                         resume=True)  # fmt: skip


def test_sft_without_output_dir_writes_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_on_targets(_starting_model(False), *_pairs(), SFT)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- expert iteration, RC


def _ei_config(output_dir: Path) -> ExpertIterationConfig:
    return ExpertIterationConfig(
        env=EnvSettings(ENV, ENV_KWARGS), iterations=3, train_episodes=3, samples_per_seed=2,
        agent=LLMAgentSettings(cot=False),
        sft=SFTConfig(learning_rate=1e-3, batch_size=4, epochs=2, seed=3),
        output_dir=str(output_dir),
    )  # fmt: skip


def _rc_config(output_dir: Path) -> ReturnConditionedConfig:
    return ReturnConditionedConfig(
        env=EnvSettings(ENV, ENV_KWARGS), iterations=3, episodes_per_iteration=4,
        agent=LLMAgentSettings(cot=False),
        sft=SFTConfig(learning_rate=1e-3, batch_size=4, seed=3), output_dir=str(output_dir),
    )  # fmt: skip


CASES = [
    (ExpertIteration, _ei_config, False),
    (ExpertIteration, _ei_config, True),
    (ReturnConditioned, _rc_config, False),
]


@pytest.mark.parametrize(
    ("trainer_class", "make_config", "lora"), CASES, ids=["ei-full", "ei-lora", "rc-full"]
)
def test_self_training_killed_after_an_iteration_resumes_exactly(
    tmp_path: Path, trainer_class: Any, make_config: Any, lora: bool
):
    straight = trainer_class(make_config(tmp_path / "a"), _starting_model(lora))
    straight.train()

    class KilledAtIteration2(trainer_class):  # type: ignore[misc,valid-type]
        def iterate(self, iteration: int) -> dict[str, Any]:
            if iteration == 2:
                raise Killed
            return super().iterate(iteration)

    killed_dir = tmp_path / "b"
    with pytest.raises(Killed):
        KilledAtIteration2(make_config(killed_dir), _starting_model(lora)).train()
    assert latest_checkpoint(killed_dir).name == "iteration_000002"
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        trainer_class(make_config(killed_dir), _starting_model(lora)).train()
    resumed = trainer_class.resume(killed_dir, _starting_model(lora))
    assert resumed.iteration == 2 and resumed.config == make_config(killed_dir)
    resumed.train()

    _assert_same_weights(straight.generator.model, resumed.generator.model)

    def logged(path: Path) -> list[dict[str, Any]]:
        lines = (path / "metrics.jsonl").read_text().splitlines()
        return _without_seconds([json.loads(line) for line in lines])

    assert logged(tmp_path / "a") == logged(killed_dir)
    assert [r["iteration"] for r in logged(killed_dir)] == [1, 2, 3]
    assert _checkpoint_files(killed_dir) <= {".safetensors", ".json", ".md"}
