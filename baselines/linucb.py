"""Disjoint LinUCB (Li, Chu, Langford & Schapire, 2010, Algorithm 1) for contextual bandits.

Each arm ``a`` has its own ridge regression of reward on the context ``x``:

    A_a = ridge * I + sum x x^T,   b_a = sum r x   (over the steps that pulled a)
    theta_a = A_a^-1 b_a,          p_a = theta_a . x + alpha * sqrt(x^T A_a^-1 x)

and the agent plays argmax p_a. Like every baseline it is stateless: A and b
are rebuilt from ``turn.history`` at each decision (one ``einsum`` and a batched
solve of K small systems), with the past contexts read from
``Step.observation`` and the current one from ``turn.observation``.

A constant feature 1 is appended to the context by default (``intercept``).
The rating model of SPEC.md 1.2 is ``offset + scale * user . movie``: without
the constant, a per-arm linear model through the origin cannot represent the
offset of about 3 rating points, and its estimates stay biased. Li et al. put
a constant feature in their context vectors too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agentbench.agent.interface import Decision, Turn
from agentbench.baselines.bandit import _is_number, argmax_random_tie
from agentbench.envs import CONTEXTUAL_FAMILY
from agentbench.errors import ConfigError
from agentbench.records import Step

DEFAULT_ALPHA = 1.0
DEFAULT_RIDGE = 1.0


def context_features(observation: object, intercept: bool = True) -> np.ndarray:
    """The context vector as float64, with a trailing 1 when ``intercept``."""
    x = np.asarray(observation, dtype=np.float64).reshape(-1)
    return np.append(x, 1.0) if intercept else x


def linucb_values(
    history: Sequence[Step],
    context: np.ndarray,
    n_arms: int,
    alpha: float = DEFAULT_ALPHA,
    ridge: float = DEFAULT_RIDGE,
    intercept: bool = True,
) -> np.ndarray:
    """Upper confidence bound ``p_a`` of every arm for ``context``, given ``history``."""
    x = context_features(context, intercept)
    d = len(x)
    design = np.eye(d) * ridge + np.zeros((n_arms, d, d))  # A_a, one per arm
    target = np.zeros((n_arms, d))  # b_a
    if history:
        past = np.array([step.observation for step in history], dtype=np.float64)
        if intercept:
            past = np.hstack([past, np.ones((len(past), 1))])
        actions = np.fromiter((step.action for step in history), dtype=np.int64)
        rewards = np.fromiter((step.reward for step in history), dtype=np.float64)
        # Per-arm sums as matrix products with the one-hot (n, K) matrix of pulls.
        pulled = np.eye(n_arms)[actions]
        outer = (past[:, :, None] * past[:, None, :]).reshape(len(past), d * d)
        design += (pulled.T @ outer).reshape(n_arms, d, d)
        target += pulled.T @ (rewards[:, None] * past)
    # One batched solve for theta_a = A_a^-1 b_a and A_a^-1 x (A_a is symmetric positive definite).
    rhs = np.stack([target, np.broadcast_to(x, (n_arms, d))], axis=2)
    solved = np.linalg.solve(design, rhs)
    theta, a_inv_x = solved[:, :, 0], solved[:, :, 1]
    width = np.sqrt(np.maximum(a_inv_x @ x, 0.0))
    return theta @ x + alpha * width


@dataclass
class LinUCBAgent:
    """Disjoint LinUCB on the context vector; ties (e.g. at the first step) broken at random."""

    alpha: float = DEFAULT_ALPHA
    ridge: float = DEFAULT_RIDGE
    intercept: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if not _is_number(self.alpha) or self.alpha < 0:
            raise ConfigError(f"LinUCB alpha must be a number >= 0, got {self.alpha!r}")
        if not _is_number(self.ridge) or self.ridge <= 0:
            raise ConfigError(f"LinUCB ridge must be a number > 0, got {self.ridge!r}")
        if not self.name:
            settings = []
            if self.alpha != DEFAULT_ALPHA:
                settings.append(f"alpha={self.alpha:g}")
            if self.ridge != DEFAULT_RIDGE:
                settings.append(f"ridge={self.ridge:g}")
            if not self.intercept:
                settings.append("intercept=False")
            self.name = f"linucb({', '.join(settings)})" if settings else "linucb"

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        decisions = []
        for turn in turns:
            values = linucb_values(
                turn.history,
                turn.observation,
                len(turn.env.action_labels()),
                self.alpha,
                self.ridge,
                self.intercept,
            )
            decisions.append(Decision(argmax_random_tie(values, turn.rng)))
        return decisions

    def supports(self, family: str) -> bool:
        return family == CONTEXTUAL_FAMILY
