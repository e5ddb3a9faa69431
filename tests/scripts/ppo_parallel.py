"""Run by tests/test_rlft_parallel.py, once plainly and once under ``accelerate launch``:
train PPO from a TOML config, then write this process's trainable parameters
(float64 sums per tensor and a SHA-256 of the raw bytes) to
``<output_dir>/params-rank<R>.json``. At exit, after agentbench's own exit handler,
write whether the process group was still alive to ``<output_dir>/exit-rank<R>.json``."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from agentbench.rlft import PPOTrainer, load_ppo_config


def _record_group_at_exit(out: Path) -> None:
    alive = torch.distributed.is_available() and torch.distributed.is_initialized()
    out.write_text(json.dumps({"group_alive": alive}))


def main(config_path: str) -> None:
    torch.set_num_threads(1)
    config = load_ppo_config(config_path)
    rank = os.environ.get("RANK", "0")
    # Registered before the trainer sets up the group: atexit runs this one after
    # the teardown that DataParallel registers.
    atexit.register(_record_group_at_exit, Path(config.output_dir) / f"exit-rank{rank}.json")
    trainer = PPOTrainer(config)
    trainer.train()
    digest = hashlib.sha256()
    sums = []
    for parameter in trainer.params:
        data = parameter.detach().cpu().contiguous()
        digest.update(data.numpy().tobytes())
        sums.append(float(data.double().sum()))
    out = Path(trainer.config.output_dir) / f"params-rank{trainer.parallel.rank}.json"
    out.write_text(json.dumps({"sha256": digest.hexdigest(), "sums": sums}))


if __name__ == "__main__":
    main(sys.argv[1])
