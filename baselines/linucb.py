"""Disjoint LinUCB (Li, Chu, Langford & Schapire, 2010, Algorithm 1) for contextual bandits.

The agent plays the arm with the highest bound ``agentbench.confidence_bounds.linucb_values``
(each arm's ridge regression of reward on the context, plus ``alpha`` widths). Like every
baseline it is stateless: the regressions are rebuilt from ``turn.history`` at each
decision (one ``einsum`` and a batched solve of K small systems), with the past contexts
read from ``Step.observation`` and the current one from ``turn.observation``.

A constant feature 1 is appended to the context by default (``intercept``).
The rating model of SPEC.md 1.2 is ``offset + scale * user . movie``: without
the constant, a per-arm linear model through the origin cannot represent the
offset of about 3 rating points, and its estimates stay biased. Li et al. put
a constant feature in their context vectors too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentbench.agent.interface import Decision, Turn
from agentbench.baselines.bandit import _is_number, argmax_random_tie
from agentbench.confidence_bounds import DEFAULT_ALPHA, DEFAULT_RIDGE, linucb_values
from agentbench.envs import CONTEXTUAL_FAMILY
from agentbench.errors import ConfigError


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
