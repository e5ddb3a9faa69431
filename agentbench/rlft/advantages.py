"""Advantage estimates for PPO (SPEC.md section 3), as pure numpy functions.

Two estimators, one per kind of episode:

- fixed-length episodes (bandits): Monte-Carlo returns-to-go with a baseline, the
  batch mean return-to-go at the same step. No value network: every episode of a
  bandit rollout has the same horizon, so "the same step" compares like with like.
- variable-length episodes (tic-tac-toe): GAE over a learned value head.

Rewards here are the training rewards of each step (normalised env reward plus
shaping), already placed where the reward scheme puts them (dense or sparse).
Episodes are complete: the value after the last step is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agentbench.errors import ConfigError


def returns_to_go(rewards: Sequence[float] | np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1}, with G after the last step 0.

    Accepts one episode (shape (T,)) or a batch of equal-length episodes (shape (N, T));
    the recursion runs along the last axis.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    returns = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[:-1])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * running
        returns[..., t] = running
    return returns


def mc_baseline_advantages(
    rewards: Sequence[Sequence[float]] | np.ndarray, gamma: float = 1.0
) -> np.ndarray:
    """Returns-to-go minus the batch mean return-to-go at the same step, shape (N, T).

    The baseline removes what every episode gets at step t anyway (e.g. the mean
    reward still to come), so an answer is credited only for doing better than the
    batch at that point. Needs equal-length episodes: a ragged batch is an error
    (use GAE with a value head for those).
    """
    rows = [np.asarray(r, dtype=np.float64) for r in rewards]
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise ConfigError(
            f"Monte-Carlo advantages need equal-length episodes, got lengths {sorted(lengths)}; "
            "use advantage = 'gae' for variable-length episodes"
        )
    if not rows:
        return np.zeros((0, 0))
    returns = returns_to_go(np.stack(rows), gamma)
    return returns - returns.mean(axis=0, keepdims=True)


def gae(
    rewards: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and value targets of ONE complete episode.

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t), with V after the last step 0;
    A_t = delta_t + gamma * lam * A_{t+1}. Returns (advantages, returns) where
    returns = advantages + values are the value head's regression targets
    (lam = 1 gives the Monte-Carlo return, lam = 0 the one-step TD target).
    Episodes of different lengths are handled by calling this once per episode.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if rewards.shape != values.shape or rewards.ndim != 1:
        raise ConfigError(
            f"gae needs one reward and one value per step, got shapes {rewards.shape} "
            f"and {values.shape}"
        )
    advantages = np.zeros_like(rewards)
    next_value, running = 0.0, 0.0
    for t in range(len(rewards) - 1, -1, -1):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values
