"""Peak memory and time of one packed training pass, by ``max_packed_tokens``.

A packed pass forwards each episode's steps as one trie (agentbench.models.packing):
the history the steps share is forwarded once. With the full history every step's
prompt extends the previous one and the trie stays small; with a sliding history
(``history_length``, as the self-training small scale uses) the window moves every
step, little is shared, and the trie reaches ``max_packed_tokens`` (4096 by default):
each pass is then one long row, and attention over it is quadratic in its length.

For each ``--max-tokens`` value a fresh subprocess builds the model and the episodes,
plans the passes as PPO does (:func:`plan_micro_batches`, one group per episode) and
runs one forward + backward over them (bf16 autocast by default). Printed side by
side from one run: the peak resident memory above the process's RSS before the pass,
the seconds, the passes and their padded tokens, and each ratio to the first value.

    .venv/bin/python scripts/bench_packed_memory.py --model tiny
    .venv/bin/python scripts/bench_packed_memory.py --model smollm2-shape --window 20
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training_precision import smollm2_shaped  # noqa: E402

from agentbench.models.packing import plan_micro_batches, trie_size  # noqa: E402
from agentbench.models.tiny import tiny_generator  # noqa: E402
from agentbench.rlft.precision import compute_precision  # noqa: E402


def windowed_episodes(
    n: int, steps: int, window: int | None, answer: int, seed: int
) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Synthetic bandit-shaped rows: a 250-token header, one 16-token line per past
    step (the last ``window`` of them; all with None), a 30-token question, an answer."""
    rng = np.random.default_rng(seed)
    prompts, completions, groups = [], [], []
    for e in range(n):
        header = rng.integers(5, 250, 250).tolist()
        lines = [rng.integers(5, 250, 16).tolist() for _ in range(steps)]
        question = rng.integers(5, 250, 30).tolist()
        for t in range(steps):
            shown = lines[:t] if window is None else lines[max(0, t - window) : t]
            prompts.append(header + [x for line in shown for x in line] + question)
            completions.append(rng.integers(5, 250, answer).tolist())
            groups.append(e)
    return prompts, completions, groups


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(args: argparse.Namespace, max_tokens: int) -> dict[str, float]:
    torch.set_num_threads(args.threads)
    generator = tiny_generator(seed=0) if args.model == "tiny" else smollm2_shaped(0)
    model = generator.model
    model.requires_grad_(True)
    prompts, completions, groups = windowed_episodes(
        args.episodes, args.steps, args.window, args.answer_tokens, 0
    )
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    passes = plan_micro_batches(rows, groups, max_tokens)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model.train()
    before = current_rss_mib()
    started = time.perf_counter()
    padded = 0
    for tries in passes:
        members = [r for trie in tries for r in trie]
        labels = [k for k, trie in enumerate(tries) for _ in trie]
        padded += len(tries) * max(trie_size([rows[r] for r in trie]) for trie in tries)
        with compute_precision(model, dtype):
            logprobs = generator.packed_logprobs(
                [prompts[r] for r in members],
                [completions[r] for r in members],
                groups=labels,
                max_packed_tokens=max_tokens,
            ).logprobs
        torch.cat(logprobs).sum().backward()
    seconds = time.perf_counter() - started
    return {
        "max_packed_tokens": max_tokens,
        "peak_above_start_mib": peak_rss_mib() - before,
        "seconds": seconds,
        "passes": len(passes),
        "padded_tokens": padded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["tiny", "smollm2-shape"], default="tiny")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--window", type=int, default=None, help="history_length (default: all)")
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--max-tokens", default="4096,2048,1024")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args, args.child)))
        return
    results = []
    for value in (int(v) for v in args.max_tokens.split(",")):
        command = [sys.executable, __file__, *sys.argv[1:], "--child", str(value)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"model={args.model} window={args.window} episodes={args.episodes} "
          f"steps={args.steps} dtype={args.dtype} threads={args.threads}")  # fmt: skip
    first = results[0]
    for r in results:
        print(
            f"max_packed_tokens={r['max_packed_tokens']} passes={r['passes']} "
            f"padded_tokens={r['padded_tokens']} peak_mib={r['peak_above_start_mib']:.0f} "
            f"seconds={r['seconds']:.2f} "
            f"peak_ratio={r['peak_above_start_mib'] / first['peak_above_start_mib']:.2f} "
            f"time_ratio={r['seconds'] / first['seconds']:.2f}"
        )


if __name__ == "__main__":
    main()
