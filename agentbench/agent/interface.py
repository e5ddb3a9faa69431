"""The one agent interface: classic baselines and LLM agents are interchangeable.

An agent sees a batch of :class:`Turn` objects (one per live env) and returns
one :class:`Decision` per turn. Agents keep no per-episode state of their
own: everything an agent may use about the past is in ``Turn.history``, so the
runner can interleave episodes of different lengths freely, resume a run, and
replay recorded histories in the analysers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from agentbench.envs.protocol import TextEnv
from agentbench.records import Step, to_jsonable


@dataclass
class Turn:
    """What an agent sees for one env at one decision."""

    env: TextEnv  # the unwrapped env: text protocol, legal actions
    env_id: str
    observation: Any
    info: dict[str, Any]
    history: list[Step]  # the steps of this episode so far, oldest first
    rng: np.random.Generator  # the agent's own stream for this episode (seeded)

    @property
    def step(self) -> int:
        """1-based index of the step about to be taken."""
        return len(self.history) + 1


@dataclass
class Decision:
    """An agent's answer for one turn.

    ``action`` is an action index, or None when the agent's answer could not be
    turned into one (an LLM's unparseable text): the runner then executes a
    uniformly random legal action and flags the step invalid. An index that is
    not legal in the current state is flagged invalid too, and the env decides
    what happens (tic-tac-toe flags an illegal move and plays a random one).
    """

    action: int | None
    text: str = ""  # generated text, for LLM agents
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. token ids, log-probs


@runtime_checkable
class Agent(Protocol):
    """Anything with a name that maps a batch of turns to decisions."""

    name: str

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        """One decision per turn, in order."""

    def supports(self, family: str) -> bool:
        """Whether the agent can play envs of this family ('mab', 'cb', 'tictactoe', ...)."""


_SCALARS = (bool, int, float, str, type(None))


def resolved_settings(agent: Agent) -> dict[str, Any]:
    """The agent's settings with every default filled in, as JSON values: what it
    returns from a ``resolved_settings()`` method, else the public fields of a
    dataclass agent (its name left out), else nothing. Episode records keep this, so
    an analysis reads what the agent ran with rather than today's defaults.

    A value that is not JSON (a formula, an opponent object) is recorded by its name.
    """
    method = getattr(agent, "resolved_settings", None)
    if callable(method):
        return to_jsonable(dict(method()))
    if not dataclasses.is_dataclass(agent):
        return {}
    settings = {}
    for item in dataclasses.fields(agent):
        if not item.init or item.name == "name" or item.name.startswith("_"):
            continue
        value = getattr(agent, item.name)
        if not isinstance(value, _SCALARS):
            value = getattr(value, "__name__", type(value).__name__)
        settings[item.name] = value
    return settings
