"""Tic-tac-toe players: random, perfect (minimax), MCTS and a noisy wrapper.

They only see a row-major tuple board (see ``tictactoe_rules``) and the mark
they play, and draw every random choice from the generator they are handed.
That keeps them independent of the env: the env uses one as its opponent, and
the baselines use the same classes as players on the agent's side.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from agentbench.envs.tictactoe_rules import (
    EMPTY,
    Board,
    legal_moves,
    other,
    play,
    winner,
)
from agentbench.errors import ConfigError

# UCT's exploration constant: sqrt(2) is the value of Kocsis & Szepesvari's bound
# for rewards in [0, 1].
UCT_EXPLORATION = math.sqrt(2.0)
DEFAULT_MCTS_SIMULATIONS = 200
DEFAULT_NOISE = 0.5  # SPEC.md 1.3: noisy MCTS plays a random move with probability 0.5


@runtime_checkable
class Opponent(Protocol):
    """Anything that picks a move; used for the env's opponent and for baseline players."""

    def choose(self, board: Board, mark: int, rng: np.random.Generator) -> int:
        """A legal row-major cell for ``mark`` to play on ``board`` (the game is not over)."""


def _random_cell(board: Board, rng: np.random.Generator) -> int:
    moves = legal_moves(board)
    return moves[int(rng.integers(len(moves)))]


@dataclass(frozen=True)
class RandomOpponent:
    """Uniformly random legal moves: the weakest reference player."""

    def choose(self, board: Board, mark: int, rng: np.random.Generator) -> int:
        return _random_cell(board, rng)


@functools.cache
def negamax(board: Board, mark: int) -> int:
    """Game value of ``board`` for ``mark`` (to move) under perfect play by both sides.

    A win is worth 1 + the number of empty cells left when it happens, a loss the
    negative of that, a draw 0: so a player prefers faster wins and slower losses.
    Memoised: from the empty board this visits the 5478 reachable positions once.
    """
    won_by = winner(board)
    if won_by != EMPTY:
        score = 1 + board.count(EMPTY)
        return score if won_by == mark else -score
    moves = [cell for cell in range(9) if board[cell] == EMPTY]
    if not moves:
        return 0
    opponent = other(mark)
    return max(-negamax(play(board, cell, mark), opponent) for cell in moves)


@dataclass(frozen=True)
class MinimaxOpponent:
    """Perfect play; among equally good moves it picks one at random, so games vary."""

    def move_values(self, board: Board, mark: int) -> dict[int, int]:
        """Negamax value of each legal move for ``mark`` (higher is better)."""
        opponent = other(mark)
        return {cell: -negamax(play(board, cell, mark), opponent) for cell in legal_moves(board)}

    def choose(self, board: Board, mark: int, rng: np.random.Generator) -> int:
        values = self.move_values(board, mark)
        best = max(values.values())
        best_moves = [cell for cell, value in values.items() if value == best]
        return best_moves[int(rng.integers(len(best_moves)))]


def check_simulations(simulations: object) -> int:
    """``simulations`` as an int >= 1, or ConfigError naming the bad value."""
    try:
        count = operator.index(simulations)  # type: ignore[arg-type]
    except TypeError:
        count = None
    if count is None or isinstance(simulations, bool) or count < 1:
        raise ConfigError(f"mcts_simulations must be an integer of at least 1, got {simulations!r}")
    return count


def check_noise(noise: object) -> float:
    """``noise`` as a probability in [0, 1], or ConfigError naming the bad value."""
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        probability = math.nan
    else:
        probability = float(noise)
    if not 0.0 <= probability <= 1.0:  # also rejects NaN
        raise ConfigError(f"opponent_noise must be a probability in [0, 1], got {noise!r}")
    return probability


class _Node:
    """One position in the MCTS tree.

    ``value`` sums the rollout results (1 win, 0.5 draw, 0 loss) for the player
    who moved INTO this node, which is what its parent maximises when selecting.
    """

    __slots__ = ("board", "mark", "move", "parent", "children", "untried", "visits", "value")

    def __init__(self, board: Board, mark: int, move: int, parent: _Node | None) -> None:
        self.board = board
        self.mark = mark  # the player to move here
        self.move = move  # the cell played to reach this node (-1 at the root)
        self.parent = parent
        self.children: list[_Node] = []
        self.untried = legal_moves(board)
        self.visits = 0
        self.value = 0.0


def _rollout(board: Board, mark: int, rng: np.random.Generator) -> int:
    """Play uniformly random moves to the end; return the winner's mark (EMPTY on a draw)."""
    won_by = winner(board)
    if won_by != EMPTY:
        return won_by
    cells = list(board)
    empties = [cell for cell in range(9) if cells[cell] == EMPTY]
    for cell in rng.permutation(empties).tolist():
        cells[cell] = mark
        won_by = winner(cells)  # type: ignore[arg-type]
        if won_by != EMPTY:
            return won_by
        mark = other(mark)
    return EMPTY


@dataclass(frozen=True)
class MCTSOpponent:
    """UCT (Kocsis & Szepesvari, 2006) with uniformly random rollouts.

    Plays the most visited root move after ``simulations`` simulations; fewer
    simulations make a weaker player, which gives a graded ladder of opponents.
    """

    simulations: int = DEFAULT_MCTS_SIMULATIONS
    exploration: float = UCT_EXPLORATION

    def __post_init__(self) -> None:
        object.__setattr__(self, "simulations", check_simulations(self.simulations))

    def choose(self, board: Board, mark: int, rng: np.random.Generator) -> int:
        root = _Node(board, mark, -1, None)
        if len(root.untried) == 1:
            return root.untried[0]
        for _ in range(self.simulations):
            node = root
            while not node.untried and node.children:  # selection
                node = self._select(node)
            if node.untried:  # expansion
                index = int(rng.integers(len(node.untried)))
                node.untried[index], node.untried[-1] = node.untried[-1], node.untried[index]
                move = node.untried.pop()
                child = _Node(play(node.board, move, node.mark), other(node.mark), move, node)
                node.children.append(child)
                node = child
            won_by = _rollout(node.board, node.mark, rng)
            while node is not None:  # backpropagation
                node.visits += 1
                if won_by == EMPTY:
                    node.value += 0.5
                elif won_by != node.mark:  # the player who moved into node won
                    node.value += 1.0
                node = node.parent
        return max(root.children, key=lambda child: child.visits).move

    def _select(self, node: _Node) -> _Node:
        """The child with the highest UCB1 score."""
        log_visits = math.log(node.visits)
        c = self.exploration
        return max(
            node.children,
            key=lambda ch: ch.value / ch.visits + c * math.sqrt(log_visits / ch.visits),
        )


@dataclass(frozen=True)
class NoisyOpponent:
    """``base`` that plays a uniformly random legal move instead with probability ``noise``."""

    base: Opponent = field(default_factory=MCTSOpponent)
    noise: float = DEFAULT_NOISE

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise", check_noise(self.noise))

    def choose(self, board: Board, mark: int, rng: np.random.Generator) -> int:
        if rng.random() < self.noise:
            return _random_cell(board, rng)
        return self.base.choose(board, mark, rng)


# Opponent names (the env ids of registration.TICTACTOE_OPPONENTS) -> constructor
# from (mcts_simulations, noise).
OPPONENTS: dict[str, Callable[[int, float], Opponent]] = {
    "random": lambda simulations, noise: RandomOpponent(),
    "minimax": lambda simulations, noise: MinimaxOpponent(),
    "mcts": lambda simulations, noise: MCTSOpponent(simulations),
    "noisy-mcts": lambda simulations, noise: NoisyOpponent(MCTSOpponent(simulations), noise),
}


def make_opponent(
    name: str,
    mcts_simulations: int = DEFAULT_MCTS_SIMULATIONS,
    noise: float = DEFAULT_NOISE,
) -> Opponent:
    """The player called ``name``; every argument is validated whatever the name.

    Raises ConfigError for an unknown name, ``mcts_simulations < 1`` or a noise
    outside [0, 1].
    """
    simulations = check_simulations(mcts_simulations)
    probability = check_noise(noise)
    if not isinstance(name, str) or name not in OPPONENTS:
        raise ConfigError(
            f"unknown tic-tac-toe opponent {name!r}: accepted are {', '.join(OPPONENTS)}"
        )
    return OPPONENTS[name](simulations, probability)


__all__ = [
    "OPPONENTS",
    "MCTSOpponent",
    "MinimaxOpponent",
    "NoisyOpponent",
    "Opponent",
    "RandomOpponent",
    "check_noise",
    "check_simulations",
    "make_opponent",
    "negamax",
]
