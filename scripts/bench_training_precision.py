"""Packed vs per-row log-probs, and bf16 autocast vs float32, for one PPO-shaped update.

Prints name=value lines, all measured in this run:

- packed_logprob_speedup: time of the old + reference + train passes (forward,
  forward, forward + backward) of ``--episodes`` episodes x ``--steps`` steps, one
  row per step (``sequence_logprobs``, micro-batches of ``--micro-batch`` rows)
  over the same passes packed (``packed_logprobs``, one trie per episode);
- packed_max_logprob_diff: the largest difference of their log-probs (float32);
- bf16_train_speedup: the packed train pass (forward + backward) in float32 over
  the same under bf16 autocast (agentbench.rlft.precision);
- bf16_max_logprob_diff: how far bf16 log-probs are from float32 ones.

The model is a random Llama of SmolLM2-135M's shape (``--model smollm2-shape``,
no download) or the tests' tiny model (``--model tiny``); episodes are synthetic
token rows shaped like a bandit context (a header, one history line per step, the
question, a short answer).

    .venv/bin/python scripts/bench_training_precision.py --model tiny
    .venv/bin/python scripts/bench_training_precision.py --model smollm2-shape --steps 50
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from agentbench.models.tiny import tiny_generator
from agentbench.models.transformers_backend import TransformersGenerator
from agentbench.rlft.precision import compute_precision


def smollm2_shaped(seed: int) -> TransformersGenerator:
    """A random model of SmolLM2-135M's shape (30 layers, hidden 576, vocab 49152)."""
    generator = tiny_generator(seed, hidden=576, layers=30, heads=9, kv_heads=3,
                               intermediate=1536, init_std=0.02, vocab_size=49152)  # fmt: skip
    generator.name = "smollm2-shape"
    return generator


def episodes(n: int, steps: int, answer: int, seed: int) -> tuple[list, list, list]:
    rng = np.random.default_rng(seed)
    prompts, completions, groups = [], [], []
    for e in range(n):
        header = rng.integers(5, 250, 250).tolist()
        lines = [rng.integers(5, 250, 16).tolist() for _ in range(steps)]
        for t in range(steps):
            history = [x for line in lines[:t] for x in line]
            prompts.append(header + history + rng.integers(5, 250, 30).tolist())
            completions.append(rng.integers(5, 250, answer).tolist())
            groups.append(e)
    return prompts, completions, groups


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["tiny", "smollm2-shape"], default="tiny")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = tiny_generator(seed=0) if args.model == "tiny" else smollm2_shaped(0)
    generator.model.requires_grad_(True)
    prompts, completions, groups = episodes(args.episodes, args.steps, args.answer_tokens, 0)
    model = generator.model

    def per_row(train: bool) -> list[torch.Tensor]:
        out = []
        for start in range(0, len(prompts), args.micro_batch):
            rows = slice(start, start + args.micro_batch)
            logprobs = generator.sequence_logprobs(prompts[rows], completions[rows])
            if train:
                torch.cat(logprobs).sum().backward()
            out += [x.detach() for x in logprobs]
        return out

    def packed(train: bool, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        out = []
        for e in range(args.episodes):
            rows = [i for i, g in enumerate(groups) if g == e]
            with compute_precision(model, dtype):
                logprobs = generator.packed_logprobs(
                    [prompts[i] for i in rows],
                    [completions[i] for i in rows],
                    max_packed_tokens=8192,
                ).logprobs
            if train:
                torch.cat(logprobs).sum().backward()
            out += [x.detach() for x in logprobs]
        return out

    def update(step: Callable[[bool], object]) -> None:
        model.eval()
        with torch.no_grad():
            step(False)  # old log-probs
            step(False)  # reference log-probs
        model.train()
        step(True)
        model.zero_grad(set_to_none=True)
        model.eval()

    packed(False)  # warm-up
    row_seconds = timed(lambda: update(per_row))
    packed_seconds = timed(lambda: update(packed))
    with torch.no_grad():
        difference = max(
            float((a - b).abs().max()) for a, b in zip(per_row(False), packed(False), strict=True)
        )
    unique = sum(
        len({tuple(r[: n + 1]) for r in rows for n in range(len(r))})
        for rows in (
            [prompts[i] + completions[i] for i, g in enumerate(groups) if g == e]
            for e in range(args.episodes)
        )
    )
    total = sum(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    print(f"model={args.model}")
    print(f"rows={len(prompts)}")
    print(f"row_tokens={total}")
    print(f"packed_tokens={unique}")
    print(f"per_row_update_seconds={row_seconds:.2f}")
    print(f"packed_update_seconds={packed_seconds:.2f}")
    print(f"packed_logprob_speedup={row_seconds / packed_seconds:.2f}")
    print(f"packed_max_logprob_diff={difference:.2e}")

    def train_pass(dtype: torch.dtype) -> None:
        model.train()
        packed(True, dtype)
        model.zero_grad(set_to_none=True)
        model.eval()

    train_pass(torch.bfloat16)  # warm-up
    fp32_seconds = timed(lambda: train_pass(torch.float32))
    bf16_seconds = timed(lambda: train_pass(torch.bfloat16))
    with torch.no_grad():
        fp32 = packed(False, torch.float32)
        bf16 = packed(False, torch.bfloat16)
    bf16_difference = max(float((a - b).abs().max()) for a, b in zip(fp32, bf16, strict=True))
    print(f"fp32_train_pass_seconds={fp32_seconds:.2f}")
    print(f"bf16_train_pass_seconds={bf16_seconds:.2f}")
    print(f"bf16_train_speedup={fp32_seconds / bf16_seconds:.2f}")
    print(f"bf16_max_logprob_diff={bf16_difference:.3f}")


if __name__ == "__main__":
    main()
