"""Is bf16 fast on this CPU? float32 and bf16 matmuls at SmolLM2-135M's shapes, side by side.

Prints name=value lines, all measured in this run: torch's CPU kernel level, whether
agentbench counts bf16 as native here (``bf16_is_fast``: what ``dtype = "auto"`` and
the default dtype follow), the median time of each shape in float32 and in bf16
(``--tokens`` rows: the attention projections, the MLP and the vocabulary head), and
``bf16_speedup`` (float32 time over bf16 time, summed over the shapes; above 1 means
bf16 is faster). On AVX-512-BF16 / AMX CPUs bf16 is the faster one; on AVX2 CPUs torch
emulates it and it is tens of times slower.

    .venv/bin/python scripts/bench_bf16_matmul.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from agentbench.models.transformers_backend import bf16_is_fast

SHAPES = {  # (inner, outer) of SmolLM2-135M's matrices: hidden 576, MLP 1536, vocab 49152
    "q_proj": (576, 576),
    "mlp_up": (576, 1536),
    "mlp_down": (1536, 576),
    "lm_head": (576, 49152),
}


def _median_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="rows of each matmul")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"cpu_capability={torch.backends.cpu.get_cpu_capability()}")
    print(f"bf16_is_fast={bf16_is_fast(torch.device('cpu'))}")
    print(f"threads={args.threads}")
    totals = {torch.float32: 0.0, torch.bfloat16: 0.0}
    for name, (inner, outer) in SHAPES.items():
        a = torch.randn(args.tokens, inner, generator=generator)
        b = torch.randn(inner, outer, generator=generator)
        for dtype, label in ((torch.float32, "float32"), (torch.bfloat16, "bf16")):
            seconds = _median_seconds(a.to(dtype), b.to(dtype), args.repeats)
            totals[dtype] += seconds
            print(f"{name}_{label}_ms={seconds * 1000:.2f}")
    print(f"bf16_speedup={totals[torch.float32] / totals[torch.bfloat16]:.3f}")


if __name__ == "__main__":
    main()
