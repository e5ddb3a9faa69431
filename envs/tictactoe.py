"""Text tic-tac-toe against a fixed opponent (SPEC.md 1.3).

The real game is played by PettingZoo's tic-tac-toe (``tictactoe_v3``): every
move, the agent's and the opponent's, is stepped through it (converted to its
column-major squares), and the end of the game and its winner are read from
it. The opponent chooses its moves on the row-major tuple board of
``tictactoe_rules``, which is rebuilt from the engine's squares before each
decision, so the engine stays the one source of truth. We import ``raw_env``
from its module: PettingZoo 1.27 deprecates the ``pettingzoo.classic.tictactoe_v3``
alias in favour of its registry, and the module path works on every version.

The agent sees everything row-major: actions 0..8 (0 = top-left, 8 =
bottom-right) and a board of 0 empty, 1 its own mark, 2 the opponent's.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo.classic.tictactoe.tictactoe import raw_env as pettingzoo_tictactoe

from agentbench.envs.opponents import (
    DEFAULT_MCTS_SIMULATIONS,
    DEFAULT_NOISE,
    Opponent,
    make_opponent,
)
from agentbench.envs.protocol import (
    INFO_ACTION_LABEL,
    INFO_LEGAL_ACTIONS,
    check_action,
    format_transition,
)
from agentbench.envs.tictactoe_rules import (
    CROSS,
    EMPTY,
    MARK_NAMES,
    N_CELLS,
    NOUGHT,
    Board,
    board_from_pettingzoo,
    board_grid,
    board_string,
    grid_text,
    legal_moves,
    other,
    row_major_to_pettingzoo,
)
from agentbench.errors import ConfigError

AGENT_SIDES = ("X", "O", "random")
CELL_LABELS = [str(cell) for cell in range(N_CELLS)]
# PettingZoo's agent names; player_1 moves first and plays X (mark 1).
PETTINGZOO_AGENT = {CROSS: "player_1", NOUGHT: "player_2"}
OUTCOMES = {1: "win", 0: "draw", -1: "loss"}  # the agent's final reward -> outcome
# The 9-character board string inside state_text; transition_text reads it back.
_BOARD_STRING = re.compile(r"(?<![0-9])[012]{9}(?![0-9])")


class TicTacToeEnv(gym.Env):
    """Tic-tac-toe for one agent against a built-in opponent.

    Reward +1 win, 0 draw, -1 loss at the end of the game, 0 before. Playing an
    occupied cell is illegal: a uniformly random legal cell is played instead
    and the step is flagged ``info["illegal"]`` (the LLM agent's invalid-action
    rule, SPEC.md 2). ``opponent`` is a name from ``opponents.OPPONENTS`` or any
    :class:`~agentbench.envs.opponents.Opponent` object.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        opponent: str | Opponent = "random",
        agent_side: str = "X",
        mcts_simulations: int = DEFAULT_MCTS_SIMULATIONS,
        opponent_noise: float = DEFAULT_NOISE,
        show_legal_actions: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(opponent, str):
            self.opponent = make_opponent(opponent, mcts_simulations, opponent_noise)
        elif callable(getattr(opponent, "choose", None)):
            self.opponent = opponent
        else:
            raise ConfigError(
                f"opponent must be an opponent name or an object with choose(), got {opponent!r}"
            )
        if agent_side not in AGENT_SIDES:
            raise ConfigError(
                f"unknown agent_side {agent_side!r}: accepted are {', '.join(AGENT_SIDES)}"
            )
        if render_mode not in (None, "ansi"):
            raise ConfigError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.agent_side_setting = agent_side
        self.show_legal_actions = bool(show_legal_actions)
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(N_CELLS)
        self.observation_space = spaces.Box(0, 2, shape=(N_CELLS,), dtype=np.int8)
        # raw_env, not env(): PettingZoo's Board asserts on an occupied square, so a
        # bug here fails loudly instead of being turned into a silent -1 by
        # TerminateIllegalWrapper. Illegal agent moves are handled before the engine.
        self._engine = pettingzoo_tictactoe()
        self._agent_mark: int | None = None  # None until the first reset
        self._outcome: str | None = None
        # Derived from the env's seeded generator at every reset.
        self._opponent_rng: np.random.Generator | None = None
        self._illegal_rng: np.random.Generator | None = None

    # -- Gymnasium API -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        # Separate streams for the opponent and for illegal-move replacement, both
        # derived from the env's seeded generator, so one does not shift the other.
        self._opponent_rng, self._illegal_rng = self.np_random.spawn(2)
        side = self.agent_side_setting
        if side == "random":
            side = ("X", "O")[int(self.np_random.integers(2))]
        self._agent_mark = CROSS if side == "X" else NOUGHT
        self._engine.reset()
        self._outcome = None
        opponent_action = self._opponent_move() if self._agent_mark == NOUGHT else None
        info = self._info(illegal=False, executed_action=None, opponent_action=opponent_action)
        return self._observation(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        cell = check_action(action, N_CELLS, "row-major cells")
        if self._agent_mark is None or self._outcome is not None:
            raise gym.error.ResetNeeded("the game is over (or never started); call reset()")
        board = self.board
        illegal = board[cell] != EMPTY
        if illegal:
            moves = legal_moves(board)
            cell = moves[int(self._illegal_rng.integers(len(moves)))]
        self._play(cell, self._agent_mark)
        opponent_action = None if self._game_over() else self._opponent_move()
        terminated = self._game_over()
        reward = 0.0
        if terminated:
            reward = float(self._engine.rewards[PETTINGZOO_AGENT[self._agent_mark]])
            self._outcome = OUTCOMES[int(reward)]
        info = self._info(illegal=illegal, executed_action=cell, opponent_action=opponent_action)
        info[INFO_ACTION_LABEL] = CELL_LABELS[cell]
        return self._observation(), reward, terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return board_grid(self.board)

    # -- text protocol ------------------------------------------------------------
    def task_instruction(self) -> str:
        if self._agent_mark is None and self.agent_side_setting == "random":
            side = "Your mark, X or O, is drawn for each game and shown with the board."
        else:
            mark = self.agent_side
            first = "you move first" if mark == "X" else "your opponent (X) moves first"
            side = f"You play {mark}; X always moves first, so {first}."
        return (
            "You are playing tic-tac-toe on a 3x3 board against a fixed opponent. "
            "Players take turns placing their mark in an empty cell; the first to get "
            "three marks in a row, column or diagonal wins, and a full board without a "
            f"line is a draw. {side} The cells are numbered row by row:\n"
            f"{grid_text(CELL_LABELS)}\n"
            "Your action is the number of an empty cell. Choosing an occupied cell is "
            "illegal: a random empty cell is played for you instead. The board string "
            "has one digit per cell in this order: 0 empty, 1 your mark, 2 your "
            "opponent's mark. The reward is given at the end of the game: +1 if you "
            "win, 0 for a draw, -1 if you lose. Your goal is to win."
        )

    def action_labels(self) -> list[str]:
        return list(CELL_LABELS)

    def legal_actions(self) -> list[int]:
        if self._agent_mark is None or self._outcome is not None:
            return []
        return legal_moves(self.board)

    def state_text(self) -> str:
        """Board string (its first line), readable grid, and the legal cells if shown.

        ``transition_text`` reads the board string back from this text, so the
        history line shows the board before the move.
        """
        if self._agent_mark is None:
            return ""
        board = self.board
        lines = [
            f"Board: {board_string(board, self._agent_mark)}",
            f"You are {self.agent_side}:",
            board_grid(board),
        ]
        if self.show_legal_actions:
            lines.append(f"Legal actions: {', '.join(map(str, self.legal_actions()))}")
        return "\n".join(lines)

    def transition_text(self, step: int, state: str, action: int, reward: float) -> str:
        """``Step=3 State=102000000 Action=4 Reward=0``; ``state`` is state_text() before it."""
        match = _BOARD_STRING.search(state)
        return format_transition(
            step, CELL_LABELS[action], reward, state=match.group(0) if match else ""
        )

    # -- for analysis and tests ----------------------------------------------------
    @property
    def board(self) -> Board:
        """The row-major tuple board now (0 empty, 1 = X, 2 = O), read from the engine."""
        return board_from_pettingzoo(self._engine.board.squares)

    @property
    def engine(self) -> Any:
        """The PettingZoo ``tictactoe_v3`` env that plays the rules (column-major squares)."""
        return self._engine

    @property
    def agent_side(self) -> str:
        """'X' or 'O' in the current episode."""
        if self._agent_mark is None:
            raise gym.error.ResetNeeded("the agent's side is drawn at reset(); call reset()")
        return MARK_NAMES[self._agent_mark]

    # -- internals -----------------------------------------------------------------
    def _play(self, cell: int, mark: int) -> None:
        assert self._engine.agent_selection == PETTINGZOO_AGENT[mark], "move out of turn"
        self._engine.step(row_major_to_pettingzoo(cell))

    def _game_over(self) -> bool:
        return any(self._engine.terminations.values())

    def _opponent_move(self) -> int:
        assert self._agent_mark is not None
        mark = other(self._agent_mark)
        cell = int(self.opponent.choose(self.board, mark, self._opponent_rng))
        self._play(cell, mark)
        return cell

    def _observation(self) -> np.ndarray:
        assert self._agent_mark is not None
        return np.array(list(board_string(self.board, self._agent_mark)), dtype=np.int8)

    def _info(
        self, *, illegal: bool, executed_action: int | None, opponent_action: int | None
    ) -> dict[str, Any]:
        assert self._agent_mark is not None
        mask = np.zeros(N_CELLS, dtype=np.int8)
        mask[self.legal_actions()] = 1
        return {
            INFO_LEGAL_ACTIONS: mask,
            "illegal": illegal,
            "executed_action": executed_action,
            "opponent_action": opponent_action,
            "board": board_string(self.board, self._agent_mark),
            "agent_side": self.agent_side,
            "outcome": self._outcome,
        }
