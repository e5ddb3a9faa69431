"""Full fine-tuning sharded with FSDP (``parallel = "fsdp"``) under ``accelerate launch
--use_fsdp --fsdp_version 2`` with 2 CPU processes (gloo; torch's FSDP2 runs there).

For PPO and for expert iteration, the sharded run must make the update one process
makes on the same batch (the same losses and gradient norm, the same weights up to
float summation order), each process must hold about half of the weights, and a run
resumed from its first checkpoint (gathered full state, safetensors) must end with
exactly the weights of the uninterrupted sharded run. The processes play uneven
shares (3 episodes over 2 processes) and run different numbers of micro-batches, so
the idle passes that keep FSDP's collectives paired are exercised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from agentbench.errors import ConfigError
from agentbench.models.tiny import tiny_generator
from agentbench.rlft import ExpertIterationConfig, ppo_config_from_dict
from agentbench.rlft.checkpoint import export_model
from agentbench.rlft.config import ModelSettings
from agentbench.rlft.distributed import DataParallel
from agentbench.rlft.fsdp import use_fsdp
from agentbench.testing.processes import run_training_script

SCRIPT = Path(__file__).parent / "scripts" / "fsdp_train.py"
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version",
          "2", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no"]  # fmt: skip

PPO = """
parallel = "fsdp"
model = {{ name = "{model}" }}
env.id = "agentbench/GaussianBandit-v0"
env.kwargs = {{ n_arms = 2, horizon = 3, labels = "continuous" }}
num_envs = 3
episodes_per_update = 3
total_updates = 2
num_minibatches = 1
packed = false
micro_batch_size = 2
advantage = "gae"
optimizer = "adamw"
learning_rate = 1e-3
agent = {{ cot = false }}
warmup_steps = 0
eval_every = 2
eval_episodes = 3
checkpoint_every = 1
progress = false
output_dir = "{out}"
"""

EXPERT_ITERATION = """
method = "expert-iteration"
parallel = "fsdp"
model = {{ name = "{model}" }}
env.id = "agentbench/GaussianBandit-v0"
env.kwargs = {{ n_arms = 2, horizon = 3, labels = "continuous" }}
num_envs = 3
iterations = 2
train_episodes = 3
samples_per_seed = 2
agent = {{ cot = false }}
eval_episodes = 3
checkpoint_every = 1
output_dir = "{out}"
sft = {{ learning_rate = 1e-3, batch_size = 9, micro_batch_size = 2, epochs = 1 }}
"""

RETURN_CONDITIONED = """
method = "return-conditioned"
parallel = "fsdp"
model = {{ name = "{model}" }}
env.id = "agentbench/GaussianBandit-v0"
env.kwargs = {{ n_arms = 2, horizon = 3, labels = "continuous" }}
num_envs = 3
iterations = 2
episodes_per_iteration = 5
agent = {{ cot = false }}
eval_episodes = 3
checkpoint_every = 1
output_dir = "{out}"
sft = {{ learning_rate = 1e-3, batch_size = 15, micro_batch_size = 2, epochs = 1 }}
"""


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _params(out: Path) -> dict:
    return json.loads((out / "params.json").read_text())


def _single_and_sharded(tmp_path: Path, template: str, extra: list[str]) -> dict[str, Path]:
    tiny = tiny_generator(seed=3, dtype="float32")
    model = export_model(tiny.model, tiny.tokenizer, tmp_path / "tiny-model")
    runs = {}
    for name, launcher in (("single", [sys.executable]), ("fsdp", LAUNCH)):
        out = tmp_path / name
        config = tmp_path / f"{name}.toml"
        config.write_text(template.format(model=model, out=out))
        flags = ["--resume", *extra] if name == "fsdp" else []
        run_training_script([*launcher, str(SCRIPT), str(config), *flags], tmp_path)
        runs[name] = out
    return runs


def _check_sharding_and_resume(runs: dict[str, Path]) -> None:
    single, sharded = _params(runs["single"]), _params(runs["fsdp"])
    # The same weights as one process, up to float summation order. AdamW normalises each
    # gradient element by its own scale, so an element whose gradient is near zero steps
    # by about the lr either way, and summation order can flip its sign: measured on an
    # AVX-512 CPU (expert iteration), one of layer 0's 4,096 q_proj weights ended 1.6e-3
    # apart after its second step went the other way, every other element within 1e-7.
    # So a sum may differ by up to two such steps (2 x lr = 2e-3 in every config here);
    # a sharding error (a gradient not reduced, a shard missed) moves many elements.
    assert sharded["sums"].keys() == single["sums"].keys()
    for name, value in single["sums"].items():
        assert sharded["sums"][name] == pytest.approx(value, rel=1e-4, abs=2e-3), name
    # ...each process holding half of them...
    whole = json.loads((runs["single"] / "shard-rank0.json").read_text())["numel"]
    for rank in (0, 1):
        held = json.loads((runs["fsdp"] / f"shard-rank{rank}.json").read_text())["numel"]
        assert held < 0.6 * whole
    # ...and a run resumed from the gathered checkpoint ends exactly where it would have.
    resumed = Path(f"{runs['fsdp']}-resumed")
    assert _params(resumed)["sha256"] == sharded["sha256"]


def _check_export(exported: Path, run: Path) -> None:
    """The main process exported the policy (from its gathered checkpoint) as the CLI
    does: a model directory holding the trained weights."""
    from safetensors.torch import load_file

    weights = load_file(str(exported / "model.safetensors"))
    sums = _params(run)["sums"]
    assert weights.keys() <= sums.keys() and len(weights) >= len(sums)
    for name, tensor in weights.items():
        assert float(tensor.double().sum()) == pytest.approx(sums[name], rel=1e-6, abs=1e-6)


def test_fsdp_ppo_update_equals_one_process_and_resumes_exactly(tmp_path: Path) -> None:
    exported = tmp_path / "exported"
    runs = _single_and_sharded(tmp_path, PPO, ["--export", str(exported)])
    single, sharded = (_lines(runs[name] / "metrics.jsonl") for name in ("single", "fsdp"))
    assert [m["update"] for m in sharded] == [0, 1, 2]
    first_single, first_sharded = single[1], sharded[1]
    for key in ("return", "invalid_rate", "tokens_per_step"):  # the same episodes
        assert first_sharded[key] == pytest.approx(first_single[key], abs=1e-9), key
    assert first_sharded["policy_loss"] == pytest.approx(first_single["policy_loss"], abs=1e-6)
    assert first_sharded["value_loss"] == pytest.approx(first_single["value_loss"], rel=1e-5)
    assert first_sharded["grad_norm"] == pytest.approx(first_single["grad_norm"], rel=1e-4)
    assert first_single["grad_norm"] > 1e-3  # a gradient worth comparing
    _check_sharding_and_resume(runs)
    resumed = _lines(Path(f"{runs['fsdp']}-resumed") / "metrics.jsonl")
    for key in ("policy_loss", "grad_norm", "value_loss", "return"):  # the same second update
        assert resumed[2][key] == sharded[2][key], key
    _check_export(exported, runs["fsdp"])


@pytest.mark.parametrize(
    ("config", "same"),
    [(EXPERT_ITERATION, ("return", "kept_steps", "invalid_rate")),
     (RETURN_CONDITIONED, ("return", "invalid_rate"))],
    ids=["expert-iteration", "return-conditioned"],
)  # fmt: skip
def test_fsdp_self_training_equals_one_process_and_resumes_exactly(
    tmp_path: Path, config: str, same: tuple[str, ...]
) -> None:
    exported = tmp_path / "exported"
    runs = _single_and_sharded(tmp_path, config, ["--export", str(exported)])
    single, sharded = (_lines(runs[name] / "metrics.jsonl") for name in ("single", "fsdp"))
    assert [m["iteration"] for m in sharded] == [1, 2]
    for key in same:  # the same samples, selected or labelled alike
        assert sharded[0][key] == pytest.approx(single[0][key], abs=1e-9), key
    assert sharded[0]["loss"] == pytest.approx(single[0]["loss"], rel=1e-6)
    _check_sharding_and_resume(runs)
    _check_export(exported, runs["fsdp"])


def test_fsdp_refuses_what_it_cannot_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="LoRA"):
        ppo_config_from_dict({"parallel": "fsdp", "model": {"use_lora": True}})
    with pytest.raises(ConfigError, match="adamw"):
        ppo_config_from_dict({"parallel": "fsdp", "optimizer": "adafactor"})
    with pytest.raises(ConfigError, match="LoRA"):
        ExpertIterationConfig(parallel="fsdp", model=ModelSettings(use_lora=True))
    with pytest.raises(ConfigError, match="not one of"):
        ppo_config_from_dict({"parallel": "zero3"})
    two = DataParallel(rank=0, world_size=2, device=torch.device("cpu"))
    assert not use_fsdp("fsdp", DataParallel())  # one process: nothing to shard
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match='parallel = "fsdp"'):
        use_fsdp("data", two)
    assert use_fsdp("fsdp", two)
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    with pytest.raises(ConfigError, match="gradient_checkpointing = true"):
        use_fsdp("fsdp", two)
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="fsdp_version 2"):
        use_fsdp("fsdp", two)
