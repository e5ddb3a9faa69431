"""Tic-tac-toe: rules bridge to PettingZoo, the env contract, the opponents' strength."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import agentbench  # noqa: F401  (registers the env ids)
from agentbench.envs.opponents import (
    OPPONENTS,
    MCTSOpponent,
    MinimaxOpponent,
    NoisyOpponent,
    Opponent,
    RandomOpponent,
    make_opponent,
    negamax,
)
from agentbench.envs.protocol import INFO_ACTION_LABEL, INFO_LEGAL_ACTIONS, check_text_env
from agentbench.envs.registration import TICTACTOE_OPPONENTS
from agentbench.envs.tictactoe import TicTacToeEnv
from agentbench.envs.tictactoe_rules import (
    CROSS,
    EMPTY,
    EMPTY_BOARD,
    NOUGHT,
    WINNING_LINES,
    pettingzoo_to_row_major,
    row_major_to_pettingzoo,
    winner,
)
from agentbench.errors import ConfigError

INFO_KEYS = {
    INFO_LEGAL_ACTIONS,
    "illegal",
    "executed_action",
    "opponent_action",
    "board",
    "agent_side",
    "outcome",
}
# 99.9% quantile of chi-square with 8 degrees of freedom (9 first moves).
CHI2_8DF_999 = 26.12


class ScriptedOpponent:
    """Plays the given cells in order, so a test controls the whole game."""

    def __init__(self, cells: Iterable[int]) -> None:
        self.cells = list(cells)

    def choose(self, board: tuple[int, ...], mark: int, rng: np.random.Generator) -> int:
        return self.cells.pop(0)


def make_env(**kwargs: Any) -> gym.Env:
    return gym.make("agentbench/TicTacToe-v0", **kwargs)


def play_game(
    env: gym.Env, player: Opponent, seed: int, player_rng: np.random.Generator
) -> tuple[float, list[Any]]:
    """One episode with ``player`` on the agent's side; returns (return, trajectory)."""
    obs, info = env.reset(seed=seed)
    mark = CROSS if info["agent_side"] == "X" else NOUGHT
    trajectory: list[Any] = [(obs.tolist(), info["board"], info["opponent_action"])]
    terminated = False
    reward = 0.0
    while not terminated:
        action = player.choose(env.unwrapped.board, mark, player_rng)
        obs, reward, terminated, truncated, info = env.step(action)
        assert not truncated
        trajectory.append((action, obs.tolist(), reward, info["board"], info["opponent_action"]))
    return float(reward), trajectory


class AnyCellPlayer:
    """Picks any of the 9 cells, occupied or not, to exercise illegal-move replacement."""

    def choose(self, board: tuple[int, ...], mark: int, rng: np.random.Generator) -> int:
        return int(rng.integers(9))


# -- rules ---------------------------------------------------------------------------


def test_cell_conversion_is_the_transpose() -> None:
    # row-major 1 (top-middle) is row 0, col 1 -> PettingZoo square 3 * 1 + 0.
    assert [row_major_to_pettingzoo(c) for c in range(9)] == [0, 3, 6, 1, 4, 7, 2, 5, 8]
    assert all(pettingzoo_to_row_major(row_major_to_pettingzoo(c)) == c for c in range(9))


def test_winning_lines_cover_rows_columns_diagonals() -> None:
    expected = {(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8)}
    expected.add((2, 4, 6))
    assert {tuple(sorted(line)) for line in WINNING_LINES} == expected
    assert winner((1, 1, 1, 2, 2, 0, 0, 0, 0)) == CROSS
    assert winner((1, 2, 1, 1, 2, 0, 0, 2, 0)) == NOUGHT
    assert winner((1, 2, 1, 1, 2, 2, 2, 1, 1)) == EMPTY


# -- env contract --------------------------------------------------------------------


@pytest.mark.parametrize("opponent", TICTACTOE_OPPONENTS)
@pytest.mark.parametrize("side", ["X", "O", "random"])
def test_gymnasium_and_text_checkers_pass(opponent: str, side: str) -> None:
    env = make_env(opponent=opponent, agent_side=side, render_mode="ansi")
    check_env(env.unwrapped)
    check_text_env(env)
    preset = gym.make(f"agentbench/TicTacToe-{opponent}-v0", agent_side=side)
    check_env(preset.unwrapped)
    check_text_env(preset, seed=3)


def test_opponent_names_match_registered_ids() -> None:
    assert set(OPPONENTS) == set(TICTACTOE_OPPONENTS)


def test_info_keys_and_masks_on_every_step() -> None:
    env = make_env(opponent="random", agent_side="O")
    obs, info = env.reset(seed=5)
    assert INFO_KEYS <= set(info)
    assert info["agent_side"] == "O" and info["opponent_action"] is not None
    assert info["outcome"] is None and info["executed_action"] is None
    rng = np.random.default_rng(0)
    terminated = False
    while not terminated:
        legal = env.unwrapped.legal_actions()
        assert np.flatnonzero(info[INFO_LEGAL_ACTIONS]).tolist() == legal
        assert info[INFO_LEGAL_ACTIONS].dtype == np.int8
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(legal)))
        assert INFO_KEYS | {INFO_ACTION_LABEL} <= set(info)
        assert info[INFO_ACTION_LABEL] == str(info["executed_action"])
        assert info["board"] == "".join(map(str, obs.tolist()))
        if not terminated:
            assert reward == 0.0 and info["outcome"] is None
    assert info["outcome"] == {1.0: "win", 0.0: "draw", -1.0: "loss"}[reward]
    assert not info[INFO_LEGAL_ACTIONS].any() and env.unwrapped.legal_actions() == []
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


def test_same_seed_same_episodes_different_seed_differs() -> None:
    def run(env_seed: int) -> list[Any]:
        env = make_env(opponent="noisy-mcts", agent_side="random", mcts_simulations=20)
        player_rng = np.random.default_rng(123)
        return [play_game(env, AnyCellPlayer(), env_seed + i, player_rng)[1] for i in range(8)]

    first = run(0)
    assert first == run(0)
    assert first != run(100)


def test_random_side_is_drawn_from_the_seed() -> None:
    env = make_env(agent_side="random")
    sides = [env.reset(seed=seed)[1]["agent_side"] for seed in range(40)]
    assert set(sides) == {"X", "O"}
    assert sides == [env.reset(seed=seed)[1]["agent_side"] for seed in range(40)]


# -- row/column mapping through the PettingZoo engine --------------------------------


def test_moves_land_on_the_transposed_pettingzoo_square() -> None:
    env = make_env(opponent=ScriptedOpponent([4, 8]), agent_side="X")
    env.reset(seed=0)
    env.step(2)  # top-right: row 0, col 2 -> PettingZoo square 6
    _, _, _, _, info = env.step(7)  # bottom-middle: row 2, col 1 -> PettingZoo square 5
    squares = env.unwrapped.engine.board.squares
    assert squares == [0, 0, 0, 0, 2, 1, 1, 0, 2]
    assert info["board"] == "001020012"
    assert env.unwrapped.board == (0, 0, 1, 0, 2, 0, 0, 1, 2)


def test_agent_as_o_sees_itself_as_one() -> None:
    env = make_env(opponent=ScriptedOpponent([1, 3]), agent_side="O", render_mode="ansi")
    obs, info = env.reset(seed=0)
    assert obs.tolist() == [0, 2, 0, 0, 0, 0, 0, 0, 0]
    assert env.unwrapped.engine.board.squares[3] == 1  # X on row 0, col 1
    obs, *_ = env.step(5)
    assert obs.tolist() == [0, 2, 0, 2, 0, 1, 0, 0, 0]
    assert env.unwrapped.engine.board.squares[7] == 2  # O on row 1, col 2
    assert env.unwrapped.render() == " . | X | .\n---+---+---\n X | . | O\n---+---+---\n . | . | ."


@pytest.mark.parametrize(
    ("agent_cells", "opponent_cells"),
    [([0, 1, 2], [3, 4]), ([0, 3, 6], [1, 2]), ([2, 4, 6], [0, 1])],
    ids=["top-row", "left-column", "anti-diagonal"],
)
def test_a_line_of_agent_marks_wins(agent_cells: list[int], opponent_cells: list[int]) -> None:
    env = make_env(opponent=ScriptedOpponent(opponent_cells), agent_side="X")
    env.reset(seed=0)
    for cell in agent_cells[:-1]:
        _, reward, terminated, _, _ = env.step(cell)
        assert not terminated and reward == 0.0
    _, reward, terminated, _, info = env.step(agent_cells[-1])
    assert terminated and reward == 1.0 and info["outcome"] == "win"
    assert info["opponent_action"] is None


def test_opponent_line_loses() -> None:
    env = make_env(opponent=ScriptedOpponent([0, 1, 2]), agent_side="O")
    env.reset(seed=0)
    env.step(3)
    _, reward, terminated, _, info = env.step(4)
    assert terminated and reward == -1.0 and info["outcome"] == "loss"
    assert info["opponent_action"] == 2


def test_state_and_transition_text() -> None:
    env = make_env(opponent=ScriptedOpponent([2, 8]), agent_side="X")
    env.reset(seed=0)
    env.step(0)
    base = env.unwrapped
    state = base.state_text()
    assert state.splitlines()[0] == "Board: 102000000"
    assert " X | . | O" in state and "Legal actions: 1, 3, 4, 5, 6, 7, 8" in state
    _, reward, *_ = env.step(4)
    assert base.transition_text(3, state, 4, reward) == "Step=3 State=102000000 Action=4 Reward=0"
    assert "X" in base.task_instruction() and " 6 | 7 | 8" in base.task_instruction()

    hidden = make_env(agent_side="O", show_legal_actions=False)
    hidden.reset(seed=0)
    assert "Legal actions" not in hidden.unwrapped.state_text()
    assert "You play O" in hidden.unwrapped.task_instruction()


# -- illegal and invalid actions -----------------------------------------------------


def test_occupied_cell_is_replaced_by_a_random_legal_move() -> None:
    env = make_env(opponent="random", agent_side="X")
    executed = set()
    for seed in range(20):
        env.reset(seed=seed)
        _, _, _, _, info = env.step(4)
        legal_before = np.flatnonzero(info[INFO_LEGAL_ACTIONS]).tolist()
        _, _, terminated, _, info = env.step(4)
        assert info["illegal"] is True
        assert info["executed_action"] in legal_before
        assert info[INFO_ACTION_LABEL] == str(info["executed_action"])
        assert not terminated  # only 4 marks on the board: the game goes on
        assert info["board"].count("1") == 2 and info["board"].count("2") == 2
        executed.add(info["executed_action"])
    assert len(executed) > 3  # replacement is random, not a fixed cell


@pytest.mark.parametrize("action", [9, -1, 4.5, "4", True, None])
def test_out_of_range_action_raises_config_error(action: Any) -> None:
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ConfigError, match=r"0\.\.8") as error:
        env.step(action)
    assert repr(action) in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"opponent": "alphazero"}, "'alphazero'"),
        ({"agent_side": "Y"}, "'Y'"),
        ({"mcts_simulations": 0}, "got 0"),
        ({"mcts_simulations": 2.5}, "got 2.5"),
        ({"opponent_noise": 1.5}, "got 1.5"),
        ({"opponent_noise": -0.1}, "got -0.1"),
        ({"opponent_noise": math.nan}, "got nan"),
        ({"render_mode": "human"}, "'human'"),
        ({"opponent": 3}, "got 3"),
    ],
)
def test_bad_constructor_values_raise_config_error(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as error:
        TicTacToeEnv(**kwargs)
    assert named in str(error.value)


# -- opponents -----------------------------------------------------------------------


def test_negamax_solves_all_5478_reachable_positions() -> None:
    negamax.cache_clear()
    assert negamax(EMPTY_BOARD, CROSS) == 0  # perfect play draws
    assert negamax.cache_info().currsize == 5478


def test_minimax_takes_the_fastest_win_and_blocks() -> None:
    rng = np.random.default_rng(0)
    minimax = MinimaxOpponent()
    # X X . / O O . / . . .  X to move: 2 wins at once (8 would also win, later).
    assert {minimax.choose((1, 1, 0, 2, 2, 0, 0, 0, 0), CROSS, rng) for _ in range(20)} == {2}
    # X X . / O . . / . . .  O to move must block at 2.
    assert {minimax.choose((1, 1, 0, 2, 0, 0, 0, 0, 0), NOUGHT, rng) for _ in range(20)} == {2}


def test_minimax_never_loses() -> None:
    losses = wins = 0
    for side in ("X", "O"):
        env = make_env(opponent="minimax", agent_side=side)
        player_rng = np.random.default_rng(7)
        for seed in range(160):
            reward, _ = play_game(env, RandomOpponent(), seed, player_rng)
            losses += reward == 1.0  # the random agent won, so minimax lost
            wins += reward == -1.0
    assert losses == 0
    assert wins > 200  # and it punishes random play

    for side in ("X", "O"):
        env = make_env(opponent="minimax", agent_side=side)
        player_rng = np.random.default_rng(8)
        rewards = [play_game(env, MinimaxOpponent(), s, player_rng)[0] for s in range(25)]
        assert rewards == [0.0] * 25


def mean_return(player: Opponent, opponent: Opponent, games_per_side: int) -> float:
    rewards = []
    for side in ("X", "O"):
        env = make_env(opponent=opponent, agent_side=side)
        player_rng = np.random.default_rng(11)
        rewards += [play_game(env, player, s, player_rng)[0] for s in range(games_per_side)]
    return float(np.mean(rewards))


def test_more_mcts_simulations_play_better() -> None:
    strong_vs_weak = mean_return(MCTSOpponent(200), MCTSOpponent(5), games_per_side=30)
    weak_vs_strong = mean_return(MCTSOpponent(5), MCTSOpponent(200), games_per_side=30)
    # Measured about +0.85 and -0.85; a broken search would sit near 0 for both.
    assert strong_vs_weak > 0.5
    assert weak_vs_strong < -0.5


def test_mcts_takes_an_immediate_win() -> None:
    mcts = MCTSOpponent(200)
    rng = np.random.default_rng(0)
    moves = [mcts.choose((1, 1, 0, 2, 2, 0, 0, 0, 0), CROSS, rng) for _ in range(10)]
    assert moves == [2] * 10


def first_move_chi2(noise: float, games: int = 900) -> float:
    env = make_env(opponent="noisy-mcts", agent_side="O", opponent_noise=noise)
    counts = Counter(env.reset(seed=seed)[1]["opponent_action"] for seed in range(games))
    expected = games / 9
    return sum((counts.get(cell, 0) - expected) ** 2 / expected for cell in range(9))


def test_noisy_mcts_with_full_noise_plays_uniformly() -> None:
    assert first_move_chi2(noise=1.0) < CHI2_8DF_999
    assert first_move_chi2(noise=0.0, games=180) > CHI2_8DF_999  # MCTS alone is not uniform


def test_make_opponent_builds_and_validates() -> None:
    noisy = make_opponent("noisy-mcts", mcts_simulations=50, noise=0.25)
    assert noisy == NoisyOpponent(MCTSOpponent(50), 0.25)
    assert isinstance(make_opponent("minimax"), Opponent)
    with pytest.raises(ConfigError, match="random, minimax, mcts, noisy-mcts"):
        make_opponent("perfect")
    with pytest.raises(ConfigError, match="got 0"):
        MCTSOpponent(0)
