"""One PPO run after another in one process, with and without trimming the heap between.

    .venv/bin/python scripts/bench_sequential_runs.py [--episodes 4] [--threads 2]

``agentbench reproduce`` trains several models in one process, then evaluates
them. This plays the same small PPO run (mechanisms-in-rlft's ``plain`` run at
the small scale, SmolLM2-135M, 1 update of ``--episodes`` episodes) three times
in one process:

1. first, on a fresh heap;
2. right after 1, nothing trimmed (the old ``reproduce``);
3. after :func:`agentbench.memory.trim_freed_memory` (what ``reproduce`` now does
   between runs).

Every run is the same work (same seeds, same sampling), so the times compare
directly. Prints ``name=value`` lines: each run's update seconds (collect,
score, train) and RSS after it, and the ratios ``untrimmed_slowdown`` (run 2 /
run 1) and ``trimmed_slowdown`` (run 3 / run 1); 1.0 means no slowdown.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from agentbench.memory import trim_freed_memory
from agentbench.reproduce import DEFAULT_MODEL, load_experiment
from agentbench.rlft.run import make_trainer

PARTS = ("collect", "score", "train")


def _rss_mib() -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=4, help="episodes in the one update")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    experiment = load_experiment("mechanisms-in-rlft")
    seconds = []
    with tempfile.TemporaryDirectory() as scratch:
        table = experiment.table("small", args.model, None, runs=Path(scratch) / "train")
        config = dict(table["train"]["plain"])
        config.update(num_envs=args.episodes, episodes_per_update=args.episodes,
                      num_minibatches=min(2, args.episodes), total_updates=1,
                      checkpoint_every=0, progress=False)  # fmt: skip
        for run, trim_before in ((1, False), (2, False), (3, True)):
            if trim_before:
                trim_freed_memory()
            started = time.perf_counter()
            trainer, _ = make_trainer(dict(config), Path(scratch) / f"run{run}")
            (row,) = trainer.train()
            del trainer, _
            seconds.append(row["seconds"])
            parts = ", ".join(f"{k}={row['seconds_' + k]:.0f}" for k in PARTS)
            print(f"run{run}_update_seconds={row['seconds']:.0f} ({parts}; "
                  f"{time.perf_counter() - started:.0f} s with the model load)")  # fmt: skip
            print(f"run{run}_rss_mib={_rss_mib()}", flush=True)
    print(f"untrimmed_slowdown={seconds[1] / seconds[0]:.2f}")
    print(f"trimmed_slowdown={seconds[2] / seconds[0]:.2f}")
    print(f"threads={args.threads}")


if __name__ == "__main__":
    main()
