"""A damaged checkpoint (a truncated, zeroed or random file) is one line naming the
file, and resuming falls back to the newest intact checkpoint, says so, and still
continues the run exactly."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixed_bandits import learning_threads

from agentbench.agent.llm import LLMAgentSettings
from agentbench.models.tiny import tiny_generator
from agentbench.rlft import PPOConfig
from agentbench.rlft import checkpoint as ckpt
from agentbench.rlft.checkpoint import CorruptCheckpointError
from agentbench.rlft.config import EnvSettings, ModelSettings
from agentbench.rlft.ppo import PPOTrainer

RUNS = {
    "full-mc": {"model": ModelSettings(), "advantage": "mc", "optimizer": "adafactor"},
    "lora-gae": {"model": ModelSettings(use_lora=True), "advantage": "gae", "optimizer": "adamw"},
}


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    with learning_threads():
        yield


def _config(output_dir: Path, **changes: Any) -> PPOConfig:
    values: dict[str, Any] = dict(
        env=EnvSettings(
            "agentbench/GaussianBandit-v0", {"n_arms": 2, "horizon": 3, "labels": "continuous"}
        ),
        num_envs=4,
        episodes_per_update=4,
        total_updates=2,
        num_minibatches=2,
        micro_batch_size=4,
        agent=LLMAgentSettings(cot=False),
        learning_rate=1e-3,
        warmup_steps=1,
        eval_every=0,
        checkpoint_every=1,
        keep_checkpoints=2,
        output_dir=str(output_dir),
        progress=False,
    )
    values.update(changes)
    return PPOConfig(**values)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[torch.Tensor]]]:
    """Each run trained straight through 2 updates (checkpoints after 1 and 2), with its
    final weights."""
    result = {}
    for name, changes in RUNS.items():
        out = tmp_path_factory.mktemp(name)
        trainer = PPOTrainer(_config(out, **changes), tiny_generator(seed=0))
        trainer.train()
        result[name] = (out, [p.detach().clone() for p in trainer.model.parameters()])
    return result


def corrupt(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zeroed":
        path.write_bytes(bytes(len(data)))
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        raise ValueError(kind)


CASES = [
    ("full-mc", "model.safetensors", "truncated"),
    ("full-mc", "model.safetensors", "zeroed"),
    ("full-mc", "model.safetensors", "random"),
    ("full-mc", "optimizer.safetensors", "random"),
    ("full-mc", "scheduler.json", "truncated"),
    ("full-mc", "trainer_state.json", "zeroed"),
    ("lora-gae", "adapter_model.safetensors", "zeroed"),
    ("lora-gae", "value_head.safetensors", "truncated"),
    ("lora-gae", "rng.json", "random"),
    ("lora-gae", "config.json", "truncated"),
]


@pytest.mark.parametrize(("run", "name", "kind"), CASES, ids=["-".join(c) for c in CASES])
def test_a_damaged_latest_checkpoint_is_named_and_resume_falls_back(
    runs, tmp_path: Path, run: str, name: str, kind: str
):
    source, straight = runs[run]
    out = tmp_path / "run"
    shutil.copytree(source, out)
    latest = out / "checkpoints" / "update_000002"
    damaged = latest / name
    corrupt(damaged, kind)

    # Loading it: one line naming the file, not a SafetensorError or a traceback.
    with pytest.raises(CorruptCheckpointError) as error:
        ckpt.verify_checkpoint(latest)
    assert str(damaged) in str(error.value) and "\n" not in str(error.value)
    if name != "config.json":  # the trainer loads everything else itself
        trainer = PPOTrainer(_config(out, **RUNS[run]), tiny_generator(seed=0))
        with pytest.raises(CorruptCheckpointError, match="checkpoint file .*" + name) as error:
            trainer.load(latest)
        assert "\n" not in str(error.value)

    # Resuming: the intact update-1 checkpoint, with a warning naming the skipped one.
    with pytest.warns(UserWarning) as caught:
        resumed = PPOTrainer.resume(out, tiny_generator(seed=0))
    messages = [str(w.message) for w in caught]
    assert any(f"skipped checkpoint {latest}" in m and str(damaged) in m for m in messages)
    assert any("resuming from" in m and "update_000001" in m for m in messages)
    assert resumed.update == 1
    resumed.train()  # redoes update 2 exactly
    for a, b in zip(straight, resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_no_intact_checkpoint_is_one_error_listing_them(runs, tmp_path: Path):
    out = tmp_path / "run"
    shutil.copytree(runs["full-mc"][0], out)
    for update in (1, 2):
        corrupt(out / "checkpoints" / f"update_00000{update}" / "model.safetensors", "zeroed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CorruptCheckpointError, match="holds no intact checkpoint") as error:
            PPOTrainer.resume(out, tiny_generator(seed=0))
    assert "update_000002 (" in str(error.value) and "update_000001 (" in str(error.value)


def test_a_broken_pointer_falls_back_to_the_checkpoint_directories(runs, tmp_path: Path):
    out = tmp_path / "run"
    shutil.copytree(runs["full-mc"][0], out)
    corrupt(out / "checkpoints" / "latest.json", "random")
    with pytest.warns(UserWarning, match="latest.json is unreadable"):
        resumed = PPOTrainer.resume(out, tiny_generator(seed=0))
    assert resumed.update == 2
    for a, b in zip(runs["full-mc"][1], resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoints_list_their_files_and_sizes(runs):
    directory = runs["lora-gae"][0] / "checkpoints" / "update_000002"
    sizes = ckpt.read_json(directory / ckpt.FILES_JSON)
    assert "adapter_model.safetensors" in sizes and "value_head.safetensors" in sizes
    assert all((directory / name).stat().st_size == size for name, size in sizes.items())
