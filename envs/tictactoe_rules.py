"""Tic-tac-toe rules on a row-major tuple board, and the bridge to PettingZoo's cells.

Two numberings meet here. Our actions, boards and texts are ROW-MAJOR: cell
``3 * row + col``, 0 = top-left, 2 = top-right, 8 = bottom-right. PettingZoo's
``tictactoe_v3`` (the engine that plays the real game in the env) numbers its
squares COLUMN-major: square ``3 * col + row``. The only conversion between the
two is the pair ``row_major_to_pettingzoo`` / ``pettingzoo_to_row_major``.

The search players (minimax, MCTS) need millions of cheap board operations, so
they work on an immutable tuple of 9 ints (0 empty, 1 = X, 2 = O, the same
marks PettingZoo stores) instead of stepping the engine. The winning lines are
taken from PettingZoo's ``Board`` so that the rules fact lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from pettingzoo.classic.tictactoe.board import Board as PettingZooBoard

Board = tuple[int, ...]  # 9 cells, row-major, values EMPTY / CROSS / NOUGHT

EMPTY, CROSS, NOUGHT = 0, 1, 2  # PettingZoo's own square values: player_1 = 1 = X
MARK_NAMES = {CROSS: "X", NOUGHT: "O"}
EMPTY_BOARD: Board = (EMPTY,) * 9
N_CELLS = 9


def row_major_to_pettingzoo(cell: int) -> int:
    """PettingZoo's square index of our row-major ``cell`` (row r, col c -> 3c + r)."""
    row, col = divmod(cell, 3)
    return 3 * col + row


def pettingzoo_to_row_major(cell: int) -> int:
    """Our row-major cell of PettingZoo's column-major square ``cell`` (3c + r -> 3r + c)."""
    col, row = divmod(cell, 3)
    return 3 * row + col


# PettingZoo lists its lines in its own column-major numbering. Transposing the
# board maps rows to columns, columns to rows and each diagonal to itself, so the
# set of lines is the same in both numberings and can be used on our row-major
# boards unchanged. The assertion keeps that reasoning honest.
WINNING_LINES: tuple[tuple[int, int, int], ...] = tuple(
    tuple(line) for line in PettingZooBoard.winning_combinations
)
assert {frozenset(map(pettingzoo_to_row_major, line)) for line in WINNING_LINES} == {
    frozenset(line) for line in WINNING_LINES
}, "PettingZoo's winning lines are not closed under transposition"


def other(mark: int) -> int:
    """The opponent's mark."""
    return 3 - mark


def winner(board: Board) -> int:
    """The mark (X or O) holding a complete line, EMPTY if none does."""
    for a, b, c in WINNING_LINES:
        mark = board[a]
        if mark != EMPTY and mark == board[b] == board[c]:
            return mark
    return EMPTY


def legal_moves(board: Board) -> list[int]:
    """Empty cells, ascending; empty when the game is over (a won board has no moves)."""
    if winner(board) != EMPTY:
        return []
    return [cell for cell in range(N_CELLS) if board[cell] == EMPTY]


def is_over(board: Board) -> bool:
    """True once a line is complete or the board is full."""
    return winner(board) != EMPTY or EMPTY not in board


def play(board: Board, cell: int, mark: int) -> Board:
    """The board after ``mark`` is placed on the empty ``cell``."""
    if board[cell] != EMPTY:
        raise ValueError(f"cell {cell} is occupied on board {board}")
    return board[:cell] + (mark,) + board[cell + 1 :]


def to_move(board: Board) -> int:
    """Whose turn it is in a game that X opened: X when both have played as often."""
    return CROSS if board.count(CROSS) == board.count(NOUGHT) else NOUGHT


def board_from_pettingzoo(squares: Sequence[int]) -> Board:
    """Our row-major tuple board from PettingZoo's column-major ``Board.squares``."""
    return tuple(int(squares[row_major_to_pettingzoo(cell)]) for cell in range(N_CELLS))


def board_string(board: Board, own_mark: int) -> str:
    """The 9-character state string from ``own_mark``'s side: 0 empty, 1 own, 2 opponent's."""
    digits = {EMPTY: "0", own_mark: "1", other(own_mark): "2"}
    return "".join(digits[mark] for mark in board)


def grid_text(symbols: Sequence[str]) -> str:
    """Nine symbols laid out as a 3x3 grid, row-major (used for marks and cell numbers)."""
    rows = [" " + " | ".join(symbols[3 * row : 3 * row + 3]) for row in range(3)]
    return "\n---+---+---\n".join(rows)


def board_grid(board: Board) -> str:
    """The board as a readable grid of X, O and '.' for empty."""
    return grid_text([MARK_NAMES.get(mark, ".") for mark in board])
