"""Bandit speed, side by side in one process: the native vector env against a raw-RNG
floor and against Gymnasium's SyncVectorEnv, and the runner before and after its
speed-ups.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_vector_bandit.py [--num-envs 4096]
        [--episodes 3] [--rounds 3] [--runner-episodes 256]

Prints ``name=value`` lines; every figure is the median over ``--rounds`` rounds, the
contenders of a round measured one after the other.

- The floor: per step, ``standard_normal(num_envs)`` plus a gather of each env's
  pulled arm mean, the least a vector env of Gaussian bandits can do in numpy.
  ``vector_v1_fraction_of_floor`` is the native vector env's rate over it (the target
  is >= 0.25). The env counts its horizon steps per episode, not the autoreset step.
- v0 ids draw each episode's whole reward tape at reset, v1 ids only the pulled
  rewards (envs/bandits.py); both play the same random actions.
- The runner: UCB on a 10-arm Gaussian bandit through ``rollout`` into a JSONL file,
  microseconds per env-step. "old" rebuilds the previous path here (records through
  ``dataclasses.asdict``, a JSON round trip per observation, UCB recounting the whole
  history each step); ``runner_records_identical`` checks both wrote the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import gymnasium as gym
import numpy as np

import agentbench  # noqa: F401  (registers the envs)
from agentbench import records, rollout
from agentbench.agent.interface import Decision, Turn
from agentbench.baselines import UCBAgent, argmax_random_tie, arm_statistics

N_ARMS = 20
HORIZON = 50
VECTOR_ID = "agentbench/GaussianBandit-20arms-medium-button-v{version}"
RUNNER_ID = "agentbench/GaussianBandit-10arms-medium-button-v0"


def vector_env_rate(version: int, num_envs: int, episodes: int, mode: str) -> Callable[[], float]:
    """A round: env-steps per second of ``episodes`` episodes of every sub-env."""
    vec = gym.make_vec(VECTOR_ID.format(version=version), num_envs=num_envs,
                       vectorization_mode=mode)  # fmt: skip
    actions = np.random.default_rng(0).integers(
        0, N_ARMS, size=(episodes * (HORIZON + 1), num_envs)
    )

    def one_round() -> float:
        started = time.perf_counter()
        vec.reset(seed=0)
        for step_actions in actions:  # HORIZON + 1 calls per episode: next-step autoreset
            vec.step(step_actions)
        return num_envs * episodes * HORIZON / (time.perf_counter() - started)

    return one_round


def floor_rate(num_envs: int, episodes: int) -> Callable[[], float]:
    """A round: env-steps per second of standard_normal(num_envs) + a gather per step."""
    rng = np.random.default_rng(0)
    means = rng.uniform(size=(num_envs, N_ARMS))
    rows = np.arange(num_envs)
    actions = rng.integers(0, N_ARMS, size=(episodes * (HORIZON + 1), num_envs))

    def one_round() -> float:
        started = time.perf_counter()
        for step_actions in actions:
            means[rows, step_actions] + rng.standard_normal(num_envs)
        return num_envs * len(actions) / (time.perf_counter() - started)

    return one_round


# -- the runner's previous path, rebuilt for the comparison ---------------------------
def _old_to_json(episode: records.Episode) -> str:
    data = asdict(episode)
    data["steps"] = [_old_compact_step(step) for step in data["steps"]]
    return json.dumps(data, default=records._jsonable, separators=(",", ":"))


_OLD_DEFAULTS = {name: default for name, default in records._STEP_DEFAULTS
                 if default is not records._NO_DEFAULT}  # fmt: skip


def _old_compact_step(step: dict) -> dict:
    return {key: value for key, value in step.items()
            if key not in _OLD_DEFAULTS or value != _OLD_DEFAULTS[key]
            or type(value) is not type(_OLD_DEFAULTS[key])}  # fmt: skip


def _old_to_jsonable(value: object) -> object:
    return json.loads(json.dumps(value, default=records._jsonable))


class RecountingUCB(UCBAgent):
    """UCB as it was: the whole history's counts again at every step."""

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        decisions = []
        for turn in turns:
            counts, sums = arm_statistics(turn.history, len(turn.env.action_labels()))
            values = self.values(counts, sums, len(turn.history))
            decisions.append(Decision(argmax_random_tie(values, turn.rng)))
        return decisions


def runner_round(path: Path, episodes: int, old: bool) -> float:
    """Microseconds per env-step of UCB played through rollout into ``path``."""
    path.unlink(missing_ok=True)
    agent = RecountingUCB(name="ucb") if old else UCBAgent()
    with (
        mock.patch.object(records.Episode, "to_json", _old_to_json)
        if old
        else contextlib.nullcontext(),
        mock.patch.object(rollout, "to_jsonable", _old_to_jsonable)
        if old
        else contextlib.nullcontext(),
        records.EpisodeWriter(path) as writer,
    ):
        started = time.perf_counter()
        rollout.rollout(agent, RUNNER_ID, range(episodes), num_envs=64, on_episode=writer.write)
        elapsed = time.perf_counter() - started
    return elapsed / (episodes * 50) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--episodes", type=int, default=3, help="episodes per sub-env a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runner-episodes", type=int, default=256)
    parser.add_argument("--skip-sync", action="store_true", help="leave out SyncVectorEnv")
    args = parser.parse_args()

    rounds: dict[str, Callable[[], float]] = {
        "floor_env_steps_per_s": floor_rate(args.num_envs, args.episodes),
        "vector_v1_env_steps_per_s": vector_env_rate(
            1, args.num_envs, args.episodes, "vector_entry_point"
        ),  # fmt: skip
        "vector_v0_env_steps_per_s": vector_env_rate(
            0, args.num_envs, args.episodes, "vector_entry_point"
        ),  # fmt: skip
    }
    if not args.skip_sync:
        rounds["sync_v0_env_steps_per_s"] = vector_env_rate(0, args.num_envs, 1, "sync")
    rates: dict[str, list[float]] = {name: [] for name in rounds}
    runner: dict[str, list[float]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {kind: Path(tmp) / f"{kind}.jsonl" for kind in runner}
        for _ in range(args.rounds):
            for name, one_round in rounds.items():
                rates[name].append(one_round())
            for kind in runner:
                runner[kind].append(runner_round(paths[kind], args.runner_episodes, kind == "old"))
        identical = paths["old"].read_bytes() == paths["new"].read_bytes()

    median = {name: statistics.median(values) for name, values in rates.items()}
    torch = sys.modules.get("torch")
    print(f"num_envs={args.num_envs}")
    print(f"episodes_per_round={args.episodes}")
    print(f"rounds={args.rounds}")
    print(f"omp_num_threads={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"torch_threads={torch.get_num_threads() if torch else 'not imported'}")
    for name, value in median.items():
        print(f"{name}={value:.0f}")
    floor = median["floor_env_steps_per_s"]
    print(f"vector_v1_fraction_of_floor={median['vector_v1_env_steps_per_s'] / floor:.3f}")
    print(f"vector_v0_fraction_of_floor={median['vector_v0_env_steps_per_s'] / floor:.3f}")
    v1_over_v0 = median["vector_v1_env_steps_per_s"] / median["vector_v0_env_steps_per_s"]
    print(f"vector_v1_over_v0={v1_over_v0:.1f}")
    if "sync_v0_env_steps_per_s" in median:
        over_sync = median["vector_v1_env_steps_per_s"] / median["sync_v0_env_steps_per_s"]
        print(f"vector_v1_over_sync_v0={over_sync:.1f}")
    old_us, new_us = statistics.median(runner["old"]), statistics.median(runner["new"])
    print(f"runner_old_us_per_env_step={old_us:.1f}")
    print(f"runner_new_us_per_env_step={new_us:.1f}")
    print(f"runner_speedup={old_us / new_us:.2f}")
    print(f"runner_records_identical={identical}")


if __name__ == "__main__":
    main()
