"""UCB and LinUCB values from a history: the one place the two formulas live.

The UCB and LinUCB baselines act on them, the knowing-doing probe judges a model's
written values against them, and the agent's algorithm guide (``guide = "ucb"`` or
``"linucb"``) shows them in the context. Pure functions of the logged steps, below
the agents in the layering, so each of those reads the same numbers.

UCB1 (Auer, Cesa-Bianchi & Fischer, 2002): ``mean + sqrt(c ln t / n)``, +inf for an
untried arm. Disjoint LinUCB (Li, Chu, Langford & Schapire, 2010, Algorithm 1):
each arm ``a`` has its own ridge regression of reward on the context ``x``:

    A_a = ridge * I + sum x x^T,   b_a = sum r x   (over the steps that pulled a)
    theta_a = A_a^-1 b_a,          p_a = theta_a . x + alpha * sqrt(x^T A_a^-1 x)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from agentbench.records import Step

# The reference UCB constant: mean + sqrt(c ln t / n) with c = 2 is UCB1, the formula of
# SPEC.md section 4.
DEFAULT_UCB_C = 2.0
DEFAULT_ALPHA = 1.0
DEFAULT_RIDGE = 1.0


def ucb_values(
    counts: np.ndarray, sums: np.ndarray, t: int, c: float = DEFAULT_UCB_C
) -> np.ndarray:
    """UCB value of every arm: ``mean + sqrt(c * ln t / n)``, +inf for untried arms.

    ``t`` is the number of steps taken so far (``len(history)``), ``n`` the
    arm's pull count. With the default ``c = 2`` this is UCB1, the reference of
    SPEC.md section 4; this function is the one place the formula lives, and
    the knowing-doing analysis imports it to recompute the true values.
    """
    counts = np.asarray(counts, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    # ln t >= 0: once every arm is tried t >= n_arms >= 1; max() guards t = 0 calls.
    log_t = math.log(max(int(t), 1))
    if counts.all():  # most steps: no masks needed
        return sums / counts + np.sqrt(c * log_t / counts)
    values = np.full(counts.shape, np.inf)
    tried = counts > 0
    values[tried] = sums[tried] / counts[tried] + np.sqrt(c * log_t / counts[tried])
    return values


def context_features(observation: object, intercept: bool = True) -> np.ndarray:
    """The context vector as float64, with a trailing 1 when ``intercept``."""
    x = np.asarray(observation, dtype=np.float64).reshape(-1)
    return np.append(x, 1.0) if intercept else x


def linucb_terms(
    history: Sequence[Step],
    context: np.ndarray,
    n_arms: int,
    ridge: float = DEFAULT_RIDGE,
    intercept: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Each arm's predicted reward ``theta_a . x`` and width ``sqrt(x^T A_a^-1 x)`` for
    ``context``, given ``history``: the bound is ``prediction + alpha * width``."""
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
    return theta @ x, width


def linucb_values(
    history: Sequence[Step],
    context: np.ndarray,
    n_arms: int,
    alpha: float = DEFAULT_ALPHA,
    ridge: float = DEFAULT_RIDGE,
    intercept: bool = True,
) -> np.ndarray:
    """Upper confidence bound ``p_a`` of every arm for ``context``, given ``history``."""
    prediction, width = linucb_terms(history, context, n_arms, ridge, intercept)
    return prediction + alpha * width
