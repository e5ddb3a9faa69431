"""Shared by the learning tests: bandits with fixed arm means, and one torch thread.

A random-init tiny model cannot learn in-context bandit play in a CPU test; with
the same arm means in every episode, lower regret means the policy learned from
rewards (or expert data) which arm pays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agentbench.envs import register_env
from agentbench.envs import registration as env_registration
from agentbench.envs.bandits import MultiArmedBanditEnv


def fixed_arms_bandit(means: Sequence[float], default_horizon: int = 5) -> type:
    """A Gaussian bandit class (sigma 0.1) whose arm means are ``means`` in every episode."""

    class FixedArmsBandit(MultiArmedBanditEnv):
        def __init__(self, horizon: int = default_horizon, render_mode: str | None = None) -> None:
            super().__init__("gaussian", len(means), "low", "continuous", horizon, render_mode)

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
            observation, info = super().reset(seed=seed, options=options)
            self._means = np.array(means, dtype=float)
            noise = self.np_random.standard_normal(self._tape.shape)
            self._tape = self._means[:, None] + 0.1 * noise
            return observation, info

    return FixedArmsBandit


@contextmanager
def registered(env_id: str, env_class: type) -> Iterator[str]:
    """Register ``env_class`` as ``env_id`` for the duration of the block."""
    register_env(env_id, env_class, family="mab", description="test", preset=False)
    try:
        yield env_id
    finally:
        gym.registry.pop(env_id, None)
        env_registration._PRESETS.pop(env_id, None)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """The test machine has 2 cores shared with other jobs: two OpenMP threads fighting
    for them made tiny-model rollouts ~50x slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
