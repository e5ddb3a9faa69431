"""Native vector bandit vs Gymnasium's SyncVectorEnv, side by side in one run.

    .venv/bin/python scripts/bench_vector_bandit.py [--num-envs 4096] [--episodes 3]

Prints steps per second of each and the speed-up ratio. Both play the same
random actions on the same seeds (and therefore the same episodes).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import agentbench  # noqa: F401  (registers the envs)

ENV_ID = "agentbench/GaussianBandit-20arms-medium-button-v0"


def steps_per_second(mode: str, num_envs: int, episodes: int) -> float:
    vec = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode=mode)
    rng = np.random.default_rng(0)
    horizon = 50
    started = time.perf_counter()
    vec.reset(seed=0)
    for _ in range(episodes * (horizon + 1)):  # +1: the next-step autoreset
        vec.step(rng.integers(0, 20, size=num_envs))
    elapsed = time.perf_counter() - started
    vec.close()
    return num_envs * episodes * horizon / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--episodes", type=int, default=3)
    args = parser.parse_args()
    native = steps_per_second("vector_entry_point", args.num_envs, args.episodes)
    sync = steps_per_second("sync", args.num_envs, args.episodes)
    print(f"{args.num_envs} envs x {args.episodes} episodes of {ENV_ID}")
    print(f"native vector env : {native:12,.0f} env-steps/s")
    print(f"SyncVectorEnv     : {sync:12,.0f} env-steps/s")
    print(f"speed-up          : {native / sync:12.1f}x")


if __name__ == "__main__":
    main()
