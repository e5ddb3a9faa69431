"""PPO under ``accelerate launch`` with 2 CPU processes (gloo): the data-parallel update
equals the single-process one and the processes' weights stay identical.

Both runs play the same 4 episodes per update (the parallel run 2 per process, seeds
rank::2). With one minibatch per update, the gradient of the first update must be the
gradient over all 4 episodes: its norm (logged before clipping, after the processes'
gradients are summed) matches the single-process run. Had the processes not summed
their gradients, each would step on half the batch: a different norm, and weights
that differ between the processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agentbench.models.tiny import tiny_generator
from agentbench.rlft.checkpoint import export_model
from agentbench.testing.processes import run_training_script

SCRIPT = Path(__file__).parent / "scripts" / "ppo_parallel.py"

CONFIG = """
model = {{ name = "{model}", use_lora = true }}
env.id = "agentbench/GaussianBandit-v0"
env.kwargs = {{ n_arms = 2, horizon = 3, labels = "continuous" }}
num_envs = 4
episodes_per_update = 4
total_updates = 2
num_minibatches = 1
micro_batch_size = 4
agent = {{ cot = false }}
warmup_steps = 0
eval_every = 2
eval_episodes = 4
progress = false
output_dir = "{out}"
"""


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_make_the_single_process_update(tmp_path: Path) -> None:
    tiny = tiny_generator(seed=3, dtype="float32")
    model = export_model(tiny.model, tiny.tokenizer, tmp_path / "tiny-model")
    runs = {}
    for name in ("single", "parallel"):
        out = tmp_path / name
        config = tmp_path / f"{name}.toml"
        config.write_text(CONFIG.format(model=model, out=out))
        launcher = [sys.executable]
        if name == "parallel":
            launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                        "--num_processes",
                        "2", "--num_machines", "1", "--mixed_precision", "no",
                        "--dynamo_backend", "no"]  # fmt: skip
        run_training_script([*launcher, str(SCRIPT), str(config)], tmp_path)
        runs[name] = out

    single, parallel = (_metrics(runs[name]) for name in ("single", "parallel"))
    assert [m["update"] for m in parallel] == [0, 1, 2] == [m["update"] for m in single]
    first_single, first_parallel = single[1], parallel[1]
    # The same episodes (each seed plays the same way in whichever process)...
    for key in ("return", "invalid_rate", "mean_train_reward", "tokens_per_step"):
        assert first_parallel[key] == pytest.approx(first_single[key], abs=1e-9), key
    # ...give the same loss and the same whole-batch gradient.
    assert first_parallel["entropy"] == pytest.approx(first_single["entropy"], rel=1e-5)
    assert first_parallel["policy_loss"] == pytest.approx(first_single["policy_loss"], abs=1e-6)
    assert first_parallel["grad_norm"] == pytest.approx(first_single["grad_norm"], rel=1e-4)
    assert first_single["grad_norm"] > 1e-3  # a gradient worth comparing
    # The processes hold the same weights, written by each of them.
    ranks = [json.loads((runs["parallel"] / f"params-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    one = json.loads((runs["single"] / "params-rank0.json").read_text())
    assert ranks[0]["sums"] == pytest.approx(one["sums"], rel=1e-3, abs=1e-4)
    # Only the main process wrote, and the evaluation covers every held-out seed once.
    evaluation = runs["parallel"] / "eval" / "update_000002.jsonl"
    seeds = [json.loads(line)["seed"] for line in evaluation.read_text().splitlines()]
    assert sorted(seeds) == list(range(1_000_000, 1_000_004))
    assert (runs["parallel"] / "checkpoints" / "update_000002" / "rng.json").is_file()
    rng = json.loads((runs["parallel"] / "checkpoints" / "update_000002" / "rng.json").read_text())
    assert len(rng["processes"]) == 2
    # Each process tore its gloo group down at exit, before interpreter finalization
    # (left alive, its threads could abort a finished run under load).
    for rank in (0, 1):
        at_exit = json.loads((runs["parallel"] / f"exit-rank{rank}.json").read_text())
        assert at_exit == {"group_alive": False}
