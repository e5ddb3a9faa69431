"""The training reward of every step, from plain values: one shaping for every trainer.

Records keep the env's reward and nothing else; the -5 invalid-answer penalty
(SPEC.md 2), the optional exploration bonus, the optional reasoning reward (in the
spirit of RLSP: longer or more varied reasoning earns a weighted bonus, logged
apart from the outcome reward) and any normalisation are applied here,
at training time, from a :class:`RewardShaping` that each trainer builds from its
own config (PPO: every field; expert iteration and return-conditioned training:
the penalty and the bonus, env rewards unscaled, dense).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentbench.agent.parsing import ACTION_PATTERN
from agentbench.errors import ConfigError
from agentbench.records import Episode
from agentbench.settings import setting
from agentbench.shaping import EXPLORATION_BONUS, INVALID_ACTION_PENALTY

REWARDS = ("dense", "sparse")
REWARD_NORMALISATIONS = ("scale", "batch_std")
REASONING_MEASURES = ("length", "variety")


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
    reasoning_bonus: float = 0.0  # weight of reasoning_score, in [0, 1] a step; 0 = off
    reasoning_measure: str = "length"  # "length" or "variety" (reasoning_score)
    reasoning_words: int = 100  # "length": the word count that earns the whole bonus

    def __post_init__(self) -> None:
        if self.reasoning_measure not in REASONING_MEASURES:
            raise ConfigError(
                f"reasoning_measure {self.reasoning_measure!r} is not one of "
                f"{', '.join(REASONING_MEASURES)}"
            )
        if self.reward not in REWARDS:
            raise ConfigError(f"reward {self.reward!r} is not one of {', '.join(REWARDS)}")
        if self.normalisation not in REWARD_NORMALISATIONS:
            raise ConfigError(
                f"reward_normalisation {self.normalisation!r} is not one of "
                f"{', '.join(REWARD_NORMALISATIONS)}"
            )


def reasoning_score(text: str, measure: str = "length", words: int = 100) -> float:
    """How much reasoning a generated text holds before its last ``ACTION=``, in [0, 1]:
    "length": its word count over ``words`` (capped at 1); "variety": its distinct words
    over its words (0 for none), so repeating one phrase earns little."""
    answers = list(ACTION_PATTERN.finditer(text))
    reasoning = (text[: answers[-1].start()] if answers else text).lower().split()
    if not reasoning:
        return 0.0
    if measure == "length":
        return min(1.0, len(reasoning) / words)
    return len(set(reasoning)) / len(reasoning)


def reasoning_bonuses(episodes: Sequence[Episode], shaping: RewardShaping) -> list[np.ndarray]:
    """Each step's reasoning reward: ``reasoning_bonus * reasoning_score(step.text)``."""
    if not shaping.reasoning_bonus:
        return [np.zeros(len(ep.steps)) for ep in episodes]
    measure, words = shaping.reasoning_measure, shaping.reasoning_words
    return [
        shaping.reasoning_bonus
        * np.array([reasoning_score(s.text, measure, words) for s in ep.steps])  # fmt: skip
        for ep in episodes
    ]


def training_rewards(episodes: Sequence[Episode], shaping: RewardShaping) -> list[np.ndarray]:
    """Training reward of every step: normalised env reward + invalid penalty (+ bonus).

    Normalisation: "scale" divides env rewards by ``reward_scale``; "batch_std" by
    their standard deviation over these episodes (1 when they are all equal), which
    needs no running state, so a resumed run computes the same rewards. The
    exploration bonus is ``exploration_bonus * EXPLORATION_BONUS`` for an action not
    yet tried in the episode that the policy chose: a valid answer's, or a forced
    step's (answer forcing: the model's own pick among the legal labels, which keeps
    its -5 as well); an invalid answer earns nothing for the random action played
    in its place. The reasoning reward (:func:`reasoning_bonuses`) is added to every
    step after normalisation. "sparse" moves each episode's total to its last step.
    """
    env_rewards = [np.array([s.reward for s in ep.steps], dtype=np.float64) for ep in episodes]
    scale = shaping.reward_scale
    if shaping.normalisation == "batch_std":
        std = float(np.concatenate(env_rewards).std()) if env_rewards else 0.0
        scale = std if std > 1e-8 else 1.0
    result = []
    bonuses = reasoning_bonuses(episodes, shaping)
    for episode, env, bonus in zip(episodes, env_rewards, bonuses, strict=True):
        rewards = env / scale + bonus
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
