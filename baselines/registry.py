"""Baseline agents by name: what the CLI and the suite configs refer to.

``make_agent("ucb")``, ``make_agent("epsilon-greedy", epsilon=0.05)``,
``make_agent("mcts-50")`` (MCTS with 50 simulations per move). Keyword
arguments go to the agent's constructor; a bad name or argument is a
ConfigError of one sentence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from agentbench.agent.interface import Agent
from agentbench.baselines.bandit import (
    EpsilonGreedyAgent,
    GreedyAgent,
    RandomAgent,
    ThompsonSamplingAgent,
    UCBAgent,
)
from agentbench.baselines.linucb import LinUCBAgent
from agentbench.baselines.tictactoe import mcts_player, minimax_player
from agentbench.errors import ConfigError

_FACTORIES: dict[str, Callable[..., Agent]] = {
    "ucb": UCBAgent,
    "thompson": ThompsonSamplingAgent,
    "epsilon-greedy": EpsilonGreedyAgent,
    "greedy": GreedyAgent,
    "random": RandomAgent,
    "linucb": LinUCBAgent,
    "minimax": minimax_player,
    "mcts": mcts_player,
}
AGENT_NAMES: tuple[str, ...] = tuple(_FACTORIES)
# "mcts-50": MCTS with the simulation count in the name.
_MCTS_WITH_SIMULATIONS = re.compile(r"mcts-(\d+)")


def make_agent(name: str, **kwargs: Any) -> Agent:
    """The baseline agent called ``name``, built with ``kwargs``.

    Raises ConfigError for an unknown name (listing the accepted ones) or for
    arguments the agent does not take.
    """
    match = _MCTS_WITH_SIMULATIONS.fullmatch(name) if isinstance(name, str) else None
    if match is not None:
        if "simulations" in kwargs:
            raise ConfigError(
                f"agent {name!r} already names its simulation count: pass 'mcts' with "
                f"simulations={kwargs['simulations']!r} or {name!r} alone"
            )
        kwargs["simulations"] = int(match.group(1))
        name = "mcts"
    if not isinstance(name, str) or name not in _FACTORIES:
        raise ConfigError(
            f"unknown agent {name!r}: accepted are {', '.join(AGENT_NAMES)} and mcts-N "
            f"(MCTS with N simulations per move)"
        )
    try:
        return _FACTORIES[name](**kwargs)
    except TypeError as error:  # an argument the constructor does not take
        raise ConfigError(f"bad arguments {kwargs!r} for agent {name!r}: {error}") from None
