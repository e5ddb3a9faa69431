"""Run by tests/test_fsdp.py, once plainly and once under ``accelerate launch --use_fsdp``:
train a config's method to the end (``agentbench.rlft.run``), then

- write ``<output_dir>/params.json`` (main process): a SHA-256 and float64 sums of the
  whole weights (gathered from the shards under FSDP) by name;
- write ``<output_dir>/shard-rank<R>.json``: how many weight elements this process holds;
- with ``--resume``: copy the run without its last checkpoint to ``<output_dir>-resumed``,
  resume it there (``trainer_class.resume``, in the same processes) and write its
  ``params.json`` too;
- with ``--export DIR``: export the policy from the main process, as the CLI does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from agentbench.io import read_toml
from agentbench.rlft import checkpoint as ckpt
from agentbench.rlft import fsdp
from agentbench.rlft.run import export_policy, train_and_evaluate, training_config


def _model(trainer: Any) -> Any:
    return trainer.model if hasattr(trainer, "model") else trainer.generator.model


def write_params(trainer: Any, out: Path) -> None:
    model = _model(trainer)
    weights = fsdp.gathered_weights(model, trainer.parallel)  # every process takes part
    if not trainer.parallel.is_main:
        return
    if weights is None:
        weights = {name: p.detach().cpu() for name, p in model.named_parameters()}
    digest, sums = hashlib.sha256(), {}
    for name in sorted(weights):
        data = weights[name].contiguous()
        digest.update(name.encode() + data.numpy().tobytes())
        sums[name] = float(data.double().sum())
    (out / "params.json").write_text(json.dumps({"sha256": digest.hexdigest(), "sums": sums}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--export")
    args = parser.parse_args()
    torch.set_num_threads(1)
    trainer_class, config = training_config(read_toml(args.config, "training config"))
    trainer = trainer_class(config)
    train_and_evaluate(trainer)
    out = Path(config.output_dir)
    write_params(trainer, out)
    local = sum(
        p.to_local().numel() if hasattr(p, "to_local") else p.numel()
        for p in _model(trainer).parameters()
    )
    rank = trainer.parallel.rank
    (out / f"shard-rank{rank}.json").write_text(json.dumps({"numel": local}))
    if args.export and trainer.parallel.is_main:
        export_policy(trainer, args.export)
    if args.resume:
        copy = Path(f"{out}-resumed")
        if trainer.parallel.is_main:
            shutil.copytree(out, copy)
            shutil.rmtree(ckpt.checkpoints_newest_first(copy)[0])  # as if killed before it
        trainer.parallel.barrier()
        resumed = trainer_class.resume(copy)
        train_and_evaluate(resumed)
        write_params(resumed, copy)


if __name__ == "__main__":
    main()
