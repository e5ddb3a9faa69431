"""Run by tests/test_rlft_parallel.py, once plainly and once under ``accelerate launch``:
train PPO from a TOML config, then write this process's trainable parameters
(float64 sums per tensor and a SHA-256 of the raw bytes) to
``<output_dir>/params-rank<R>.json``."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from agentbench.rlft import PPOTrainer, load_ppo_config


def main(config_path: str) -> None:
    torch.set_num_threads(1)
    trainer = PPOTrainer(load_ppo_config(config_path))
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
