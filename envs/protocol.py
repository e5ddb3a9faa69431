"""The text protocol every agentbench env speaks.

An LLM cannot read a numpy observation; it reads words. Every env therefore
describes itself in text through four methods and one formatter. A user who
implements these on their own ``gymnasium.Env`` can have it played by the LLM
agent, the baselines that only need legal actions, and the analysers.

The methods are called on ``env.unwrapped`` (Gymnasium 1.x wrappers do not
forward attributes), after ``reset`` and between steps.
"""

from __future__ import annotations

import operator
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from agentbench.errors import ConfigError

# Keys every agentbench env puts in ``info`` on reset and step; analysis and the
# runner rely on them. Envs may add their own keys.
INFO_LEGAL_ACTIONS = "legal_actions"  # np.int8 mask over the action space
INFO_ACTION_LABEL = "action_label"  # label of the action that was executed


@runtime_checkable
class TextEnv(Protocol):
    """What an env must offer to be playable from text."""

    def task_instruction(self) -> str:
        """The task in words: what the agent controls and what it should maximise."""

    def action_labels(self) -> list[str]:
        """One label per action index, e.g. colour names, numbers or board cells.

        Labels must be distinct after normalisation (case, surrounding space), because
        the LLM agent maps its answer back to an index by label.
        """

    def legal_actions(self) -> list[int]:
        """Indices of the actions that are legal in the current state."""

    def state_text(self) -> str:
        """The current state in words, shown before the next decision ('' if none)."""

    def transition_text(self, step: int, state: str, action: int, reward: float) -> str:
        """One history line, e.g. ``Step=3 Action=green Reward=0.41``."""


def check_action(action: Any, n_actions: int, meaning: str = "") -> int:
    """``action`` as an index 0..n_actions-1, or one ConfigError naming the bad value.

    Accepts Python and numpy integers (also 0-d arrays), not bools or floats.
    ``meaning`` says what an index is, e.g. "row-major cells", for the message.
    """
    try:
        index = None if isinstance(action, (bool, np.bool_)) else operator.index(action)
    except TypeError:
        index = None
    if index is None or not 0 <= index < n_actions:
        what = f" ({meaning})" if meaning else ""
        raise ConfigError(
            f"action {action!r} is outside the action space: accepted are the integers "
            f"0..{n_actions - 1}{what}"
        )
    return index


TRANSITION_LINE = "Step={step}{state} Action={label} Reward={reward}"
TRANSITION_STATE = " State={state}"  # the {state} part of TRANSITION_LINE, when there is one


def format_transition(step: int, label: str, reward: float, state: str = "") -> str:
    """The history line of SPEC.md section 2, shared by the built-in envs.

    ``Step=3 Action=green Reward=0.41`` or, with a state,
    ``Step=3 State=102000000 Action=4 Reward=0``.
    """
    state_part = TRANSITION_STATE.format(state=state) if state else ""
    return TRANSITION_LINE.format(
        step=step, state=state_part, label=label, reward=format_reward(reward)
    )


def format_reward(reward: float) -> str:
    """Rewards as the LLM sees them: integers bare, others with two decimals."""
    if float(reward).is_integer():
        return str(int(reward))
    return f"{reward:.2f}"


def text_env(env: gym.Env | Any) -> TextEnv:
    """Return the unwrapped env behind ``env`` if it speaks the text protocol.

    Raises TypeError naming the missing methods otherwise, so that a user who
    registers a new env learns at once what to add.
    """
    base = getattr(env, "unwrapped", env)
    missing = [
        name
        for name in (
            "task_instruction",
            "action_labels",
            "legal_actions",
            "state_text",
            "transition_text",
        )
        if not callable(getattr(base, name, None))
    ]
    if missing:
        raise TypeError(
            f"{type(base).__name__} does not speak the agentbench text protocol: "
            f"missing {', '.join(missing)} (see agentbench.envs.TextEnv)"
        )
    return base


def check_text_env(env: gym.Env, seed: int = 0, steps: int = 20) -> None:
    """Executable statement of the text protocol, for env authors.

    Resets ``env`` and plays up to ``steps`` legal actions chosen from ``seed``,
    checking after every reset and step that the text methods return what the
    protocol promises. Raises AssertionError with the first violation found.
    """
    base = text_env(env)
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    n_actions = int(env.action_space.n)
    labels = base.action_labels()
    assert isinstance(base.task_instruction(), str) and base.task_instruction().strip(), (
        "task_instruction() must be a non-empty string"
    )
    assert len(labels) == n_actions, (
        f"action_labels() has {len(labels)} labels for {n_actions} actions"
    )
    normalised = [label.strip().lower() for label in labels]
    assert len(set(normalised)) == len(labels), f"action labels are not distinct: {labels}"
    for step in range(1, steps + 1):
        legal = base.legal_actions()
        assert legal, "legal_actions() is empty in a live state"
        assert all(0 <= a < n_actions for a in legal), f"legal_actions() out of range: {legal}"
        mask = info.get(INFO_LEGAL_ACTIONS)
        assert mask is not None, f"info lacks '{INFO_LEGAL_ACTIONS}'"
        assert sorted(np.flatnonzero(mask).tolist()) == sorted(legal), (
            "info['legal_actions'] disagrees with legal_actions()"
        )
        state = base.state_text()
        assert isinstance(state, str), "state_text() must return a string"
        action = int(rng.choice(legal))
        _, reward, terminated, truncated, info = env.step(action)
        line = base.transition_text(step, state, action, float(reward))
        assert isinstance(line, str) and labels[action] in line, (
            f"transition_text() should name the action label {labels[action]!r}: {line!r}"
        )
        if terminated or truncated:
            break
