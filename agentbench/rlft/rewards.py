"""The training reward of every step, from plain values: one shaping for every trainer.

Records keep the env's reward and nothing else; the -5 invalid-answer penalty
(SPEC.md 2), the optional exploration bonus and any normalisation are applied here,
at training time, from a :class:`RewardShaping` that each trainer builds from its
own config (PPO: every field; expert iteration and return-conditioned training:
the penalty and the bonus, env rewards unscaled, dense).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentbench.errors import ConfigError
from agentbench.records import Episode
from agentbench.settings import setting
from agentbench.shaping import EXPLORATION_BONUS, INVALID_ACTION_PENALTY

REWARDS = ("dense", "sparse")
REWARD_NORMALISATIONS = ("scale", "batch_std")


def invalid_penalty_setting() -> Any:
    """The ``invalid_penalty`` field of every training config, declared once."""
    return setting(INVALID_ACTION_PENALTY, "added to each invalid step's reward, <= 0 (SPEC: -5)")


def exploration_bonus_setting() -> Any:
    """The ``exploration_bonus`` field of every training config, declared once."""
    return setting(0.0, "weight of +1 for an action untried in the episode; 0 = off")


@dataclass(frozen=True)
class RewardShaping:
    """How env rewards become training rewards (see :func:`training_rewards`)."""

    invalid_penalty: float = INVALID_ACTION_PENALTY  # added to each invalid step, <= 0
    exploration_bonus: float = 0.0  # weight of EXPLORATION_BONUS for an untried action
    reward: str = "dense"  # "dense": every step's reward; "sparse": the total at the end
    normalisation: str = "scale"  # "scale": env / reward_scale; "batch_std": env / its std
    reward_scale: float = 1.0  # divisor of env rewards under "scale"

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise ConfigError(f"reward {self.reward!r} is not one of {', '.join(REWARDS)}")
        if self.normalisation not in REWARD_NORMALISATIONS:
            raise ConfigError(
                f"reward_normalisation {self.normalisation!r} is not one of "
                f"{', '.join(REWARD_NORMALISATIONS)}"
            )


def training_rewards(episodes: Sequence[Episode], shaping: RewardShaping) -> list[np.ndarray]:
    """Training reward of every step: normalised env reward + invalid penalty (+ bonus).

    Normalisation: "scale" divides env rewards by ``reward_scale``; "batch_std" by
    their standard deviation over these episodes (1 when they are all equal), which
    needs no running state, so a resumed run computes the same rewards. The
    exploration bonus is ``exploration_bonus * EXPLORATION_BONUS`` for an action not
    yet tried in the episode that the policy chose: a valid answer's, or a forced
    step's (answer forcing: the model's own pick among the legal labels, which keeps
    its -5 as well); an invalid answer earns nothing for the random action played
    in its place. "sparse" moves each episode's total to its last step.
    """
    env_rewards = [np.array([s.reward for s in ep.steps], dtype=np.float64) for ep in episodes]
    scale = shaping.reward_scale
    if shaping.normalisation == "batch_std":
        std = float(np.concatenate(env_rewards).std()) if env_rewards else 0.0
        scale = std if std > 1e-8 else 1.0
    result = []
    for episode, env in zip(episodes, env_rewards, strict=True):
        rewards = env / scale
        tried: set[int] = set()
        for i, step in enumerate(episode.steps):
            if not step.valid:
                rewards[i] += shaping.invalid_penalty
            chosen = step.valid or step.forced  # not the fallback's random action
            if chosen and step.action not in tried:
                rewards[i] += shaping.exploration_bonus * EXPLORATION_BONUS
            tried.add(step.action)
        if shaping.reward == "sparse" and len(rewards):
            total, rewards = rewards.sum(), np.zeros_like(rewards)
            rewards[-1] = total
        result.append(rewards)
    return result
