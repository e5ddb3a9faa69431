"""Every registered id: Gymnasium's checker, the text protocol, the naming scheme,
a user's own env, and the clear error for an unknown id."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

import agentbench
from agentbench.cli import main
from agentbench.envs import (
    INFO_ACTION_LABEL,
    INFO_LEGAL_ACTIONS,
    check_text_env,
    format_transition,
    list_envs,
    make,
    register_env,
)
from agentbench.errors import ConfigError

PRESET_IDS = [preset.env_id for preset in list_envs()]
ID_SCHEME = re.compile(
    r"^agentbench/("
    r"(Gaussian|Bernoulli)Bandit-(5|10|20)arms-(low|medium|high)-(button|continuous)"
    r"|ContextualBandit-(5|10|20)arms"
    r"|TicTacToe-(random|minimax|mcts|noisy-mcts)"
    r")-v0$"
)


def test_the_benchmark_grid_is_registered_under_the_naming_scheme() -> None:
    assert len(PRESET_IDS) == 2 * 3 * 3 * 2 + 3 + 4
    assert all(ID_SCHEME.match(env_id) for env_id in PRESET_IDS), PRESET_IDS
    assert all(env_id in gym.registry for env_id in PRESET_IDS)


@pytest.mark.parametrize("env_id", PRESET_IDS)
def test_gymnasium_checker_and_text_protocol_pass(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    check_text_env(env, seed=3)
    env.close()


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("agentbench/GaussianBandit-v0", {"n_arms": 7, "labels": "continuous", "horizon": 9}),
        ("agentbench/BernoulliBandit-v0", {"n_arms": 3, "noise": "high"}),
        ("agentbench/ContextualBandit-v0", {"n_arms": 4, "horizon": 5}),
        ("agentbench/TicTacToe-v0", {"opponent": "minimax", "agent_side": "O"}),
    ],
)
def test_parametric_ids_take_kwargs(env_id: str, kwargs: dict) -> None:
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    check_text_env(env)


def test_unknown_id_is_one_clear_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown env id 'agentbench/GaussianBandit-10arms-v0'"):
        make("agentbench/GaussianBandit-10arms-v0")
    with pytest.raises(ConfigError, match="did you mean agentbench/TicTacToe-minimax-v0"):
        make("agentbench/TicTacToe-minimx-v0")


class GuessTheNumber(gym.Env):
    """A toy env a user might write: guess a hidden number 0..3 in few tries."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.action_space = spaces.Discrete(4)
        self.observation_space = spaces.Discrete(5)
        self._tries = 0
        self._target = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._target = int(self.np_random.integers(4))
        self._tries = 0
        return 0, {INFO_LEGAL_ACTIONS: np.ones(4, dtype=np.int8)}

    def step(self, action):
        self._tries += 1
        hit = int(action) == self._target
        info = {INFO_LEGAL_ACTIONS: np.ones(4, dtype=np.int8), INFO_ACTION_LABEL: f"n{action}"}
        return min(self._tries, 4), float(hit), hit or self._tries >= 4, False, info

    def task_instruction(self) -> str:
        return "Guess the hidden number among n0, n1, n2, n3."

    def action_labels(self) -> list[str]:
        return ["n0", "n1", "n2", "n3"]

    def legal_actions(self) -> list[int]:
        return [0, 1, 2, 3]

    def state_text(self) -> str:
        return f"Tries so far: {self._tries}"

    def transition_text(self, step, state, action, reward) -> str:
        return format_transition(step, self.action_labels()[action], reward)


def test_a_user_registers_a_new_env_and_it_is_listed_and_playable(capsys) -> None:
    register_env(
        "agentbench/GuessTheNumber-v0",
        GuessTheNumber,
        family="toy",
        description="guess a number (test)",
    )
    env = make("agentbench/GuessTheNumber-v0")
    check_env(env.unwrapped)
    check_text_env(env)
    assert main(["envs"]) == 0
    assert "agentbench/GuessTheNumber-v0" in capsys.readouterr().out


def test_an_env_without_the_text_protocol_is_refused_by_name() -> None:
    env = gym.make("CartPole-v1")
    with pytest.raises(TypeError, match="missing task_instruction, action_labels"):
        check_text_env(env)


def test_cli_lists_envs_and_reports_bad_ids_without_a_traceback(capsys) -> None:
    assert main(["envs", "--family", "tictactoe"]) == 0
    out = capsys.readouterr().out
    assert "agentbench/TicTacToe-minimax-v0" in out and "GaussianBandit" not in out
    assert main(["run", "--env", "agentbench/Nope-v0", "--episodes", "1"]) == 2
    assert "unknown env id 'agentbench/Nope-v0'" in capsys.readouterr().err


def test_importing_agentbench_exposes_version() -> None:
    assert re.match(r"^\d+\.\d+\.\d+", agentbench.__version__)
