"""Tic-tac-toe players on the agent's side, built on the env's own opponents.

The search (minimax, MCTS) lives once, in :mod:`agentbench.envs.opponents`;
a player here only adapts it to the agent interface. The observation is the
board from the agent's view (0 empty, 1 the agent, 2 the opponent), and the
opponents work on any two marks that ``other()`` swaps, so the agent simply
plays mark 1 whether it is X or O in the game.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agentbench.agent.interface import Decision, Turn
from agentbench.envs import TICTACTOE_FAMILY
from agentbench.envs.opponents import (
    DEFAULT_MCTS_SIMULATIONS,
    MCTSOpponent,
    MinimaxOpponent,
    Opponent,
    check_simulations,
)
from agentbench.envs.tictactoe_rules import Board

AGENT_MARK = 1  # the agent's own cells in the observation


def observed_board(observation: object) -> Board:
    """The row-major tuple board the opponents read, from the agent's observation."""
    return tuple(int(v) for v in np.asarray(observation).reshape(-1))


@dataclass
class TicTacToePlayer:
    """Plays the cell that ``opponent`` (any ``choose(board, mark, rng)`` player) picks.

    Randomness (minimax's tie-breaking, MCTS rollouts) comes from ``turn.rng``.
    """

    opponent: Opponent
    name: str

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        return [
            Decision(int(self.opponent.choose(observed_board(t.observation), AGENT_MARK, t.rng)))
            for t in turns
        ]

    def supports(self, family: str) -> bool:
        return family == TICTACTOE_FAMILY


def minimax_player() -> TicTacToePlayer:
    """Perfect play (negamax), a random one among equally good moves."""
    return TicTacToePlayer(MinimaxOpponent(), "minimax")


def mcts_player(simulations: int = DEFAULT_MCTS_SIMULATIONS) -> TicTacToePlayer:
    """UCT with ``simulations`` random-rollout simulations per move.

    Named ``mcts`` with the default simulation count, ``mcts-N`` otherwise, so
    the name in an episode record says how strong the player was.
    """
    simulations = check_simulations(simulations)
    name = "mcts" if simulations == DEFAULT_MCTS_SIMULATIONS else f"mcts-{simulations}"
    return TicTacToePlayer(MCTSOpponent(simulations), name)
