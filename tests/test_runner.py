"""The rollout loop, suites and the runner: invalid answers, records, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentbench.agent import Decision, Turn
from agentbench.baselines import make_agent
from agentbench.cli import main
from agentbench.errors import ConfigError
from agentbench.records import read_episodes
from agentbench.rollout import play
from agentbench.suite import load_suite, run_suite, suite_from_dict


class ScriptedAgent:
    """Answers from a fixed list per step; None is an unparseable answer."""

    def __init__(self, answers: Sequence[int | None], name: str = "scripted") -> None:
        self.answers = list(answers)
        self.name = name

    def supports(self, family: str) -> bool:
        return True

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        return [Decision(self.answers[turn.step - 1], text=f"t{turn.step}") for turn in turns]


def test_invalid_answers_execute_a_random_legal_action_and_are_flagged() -> None:
    agent = ScriptedAgent([None, 2, 7, 1] + [0] * 46)
    (episode,) = play(agent, "agentbench/GaussianBandit-5arms-low-button-v0", [3])
    first, second, third = episode.steps[:3]
    assert not first.valid and first.proposed is None and 0 <= first.action < 5
    assert not first.illegal
    assert second.valid and second.action == 2
    assert second.label == "red" and second.text == "t2"
    assert not third.valid and third.proposed == 7 and not third.illegal  # outside the space
    assert [s.t for s in episode.steps] == list(range(1, 51))
    # The replacement is seeded by the episode: the same seed replays it.
    (again,) = play(agent, "agentbench/GaussianBandit-5arms-low-button-v0", [3])
    assert again.to_json() == episode.to_json()


def test_an_occupied_cell_is_illegal_and_invalid_in_tictactoe() -> None:
    agent = ScriptedAgent([4, 4, 4, 4, 4])  # the centre, again and again
    (episode,) = play(agent, "agentbench/TicTacToe-random-v0", [0])
    assert episode.steps[0].valid and episode.steps[0].action == 4
    later = episode.steps[1]
    assert later.proposed == 4 and not later.valid and later.illegal and later.action != 4
    assert episode.outcome in {"win", "draw", "loss"}
    assert episode.steps[-1].reward == {"win": 1, "draw": 0, "loss": -1}[episode.outcome]


def test_variable_length_episodes_keep_the_batch_full_and_match_one_at_a_time() -> None:
    agent = make_agent("random")
    seeds = list(range(12))
    batched = play(agent, "agentbench/TicTacToe-mcts-v0", seeds, num_envs=5)
    single = play(agent, "agentbench/TicTacToe-mcts-v0", seeds, num_envs=1)
    assert [ep.to_json() for ep in batched] == [ep.to_json() for ep in single]
    assert len({len(ep.steps) for ep in batched}) > 1  # lengths really differ


def test_suite_files_load_with_patterns_and_reject_bad_input(tmp_path: Path) -> None:
    full = load_suite("full")
    assert len(full.env_ids) == 43
    default = load_suite("default")
    assert {"ucb", "random"} <= {a["name"] for a in default.agents}
    with pytest.raises(ConfigError, match="unknown suite 'nope'"):
        load_suite("nope")
    with pytest.raises(ConfigError, match="matches no registered id"):
        suite_from_dict({"envs": [{"pattern": "agentbench/Chess-*"}], "agents": ["ucb"]})
    with pytest.raises(ConfigError, match="unknown env id 'agentbench/Nope-v0'"):
        suite_from_dict({"envs": ["agentbench/Nope-v0"], "agents": ["ucb"]})
    with pytest.raises(ConfigError, match="unknown suite settings"):
        suite_from_dict({"envs": [], "agents": [], "seeds": 3})
    bad = tmp_path / "bad.toml"
    bad.write_text("episodes = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_suite(str(bad))


def test_run_writes_config_episodes_metrics_and_a_summary(tmp_path: Path) -> None:
    suite = suite_from_dict(
        {
            "name": "tiny",
            "episodes": 6,
            "num_envs": 4,
            "agents": ["ucb", "random", "minimax"],
            "envs": [
                "agentbench/GaussianBandit-5arms-low-button-v0",
                "agentbench/TicTacToe-random-v0",
            ],
        }
    )
    result = run_suite(suite, tmp_path / "run", make_agent, progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["seeds"] == list(range(6)) and "gymnasium" in config["versions"]
    # ucb and random on the bandit, minimax and random on tic-tac-toe: 4 pairs x 6 seeds
    assert len(result.episodes) == 24 and result.played == 24
    assert ("minimax", "agentbench/GaussianBandit-5arms-low-button-v0") in result.skipped_pairs
    metrics = {(m["agent"], m["env_id"]): m for m in result.metrics}
    bandit = "agentbench/GaussianBandit-5arms-low-button-v0"
    assert (
        metrics[("ucb", bandit)]["final_regret"]["mean"]
        < metrics[("random", bandit)]["final_regret"]["mean"]
    )
    assert metrics[("minimax", "agentbench/TicTacToe-random-v0")]["loss_rate"]["mean"] == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "GaussianBandit-5arms-low-button-v0" in summary and "| env | ucb | random |" in summary
    # Running again into the same directory plays nothing new.
    again = run_suite(suite, tmp_path / "run", make_agent, progress=False)
    assert again.played == 0 and again.metrics == result.metrics
    suite.episodes = 7
    with pytest.raises(ConfigError, match="different suite or settings"):
        run_suite(suite, tmp_path / "run", make_agent, progress=False)


SLOW_SUITE = """
name = "resume-test"
episodes = 300
num_envs = 2
agents = ["ucb", "thompson"]
envs = ["agentbench/GaussianBandit-20arms-high-button-v0"]
"""


def test_a_killed_run_resumes_to_the_same_metrics_without_loss_or_duplicates(
    tmp_path: Path,
) -> None:
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(SLOW_SUITE)
    reference = tmp_path / "reference"
    assert main(["run", str(suite_file), "--out", str(reference), "--no-progress"]) == 0

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "agentbench.cli", "run", str(suite_file),
               "--out", str(killed), "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    episodes = killed / "episodes.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if episodes.exists() and episodes.read_bytes().count(b"\n") >= 40:
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    on_disk = episodes.read_bytes().count(b"\n")
    assert 40 <= on_disk < 600, f"the kill should land midway, found {on_disk} episodes"
    # Simulate a kill in the middle of a write as well.
    with episodes.open("a") as handle:
        handle.write('{"agent": "ucb", "env_id": "agentbench/Gauss')

    with pytest.warns(UserWarning, match="dropped a partial last line"):
        assert main(["run", str(suite_file), "--out", str(killed), "--no-progress"]) == 0
    resumed = read_episodes(episodes)
    keys = [ep.key for ep in resumed]
    assert len(keys) == len(set(keys)) == 600
    expected = json.loads((reference / "metrics.json").read_text())
    assert json.loads((killed / "metrics.json").read_text()) == expected


def test_cli_run_prints_the_comparison(tmp_path: Path, capsys) -> None:
    code = main(["run", "--env", "agentbench/BernoulliBandit-5arms-low-continuous-v0",
                 "--agent", "ucb", "--agent", "random", "--episodes", "4",
                 "--out", str(tmp_path / "cli"), "--no-progress"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "BernoulliBandit-5arms-low-continuous-v0" in out and "ucb" in out
    assert "8 episodes played" in out
    assert main(["run", "--agent", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err


# Where no learner can beat random within 50 steps: 20 arms whose best arm is
# better by 0.1 or 0.2 (Bernoulli high / medium noise). UCB must still not be
# worse there; everywhere else it must be better.
INDISTINGUISHABLE = ("BernoulliBandit-20arms-high", "BernoulliBandit-20arms-medium")


def test_ucb_beats_random_on_every_bandit_configuration_of_the_grid() -> None:
    from scipy import stats

    full = load_suite("full")
    bandit_ids = [
        env_id for env_id in full.env_ids if "Bandit-" in env_id and "Contextual" not in env_id
    ]
    assert len(bandit_ids) == 36
    ucb, random = make_agent("ucb"), make_agent("random")
    for env_id in bandit_ids:
        regret = {
            agent.name: [sum(s.regret for s in ep.steps) for ep in play(agent, env_id, range(64))]
            for agent in (ucb, random)
        }
        difference = [u - r for u, r in zip(regret["ucb"], regret["random"], strict=True)]
        if env_id.removeprefix("agentbench/").startswith(INDISTINGUISHABLE):
            # not significantly worse (one-sided paired t-test)
            assert stats.ttest_1samp(difference, 0.0, alternative="greater").pvalue > 0.01, env_id
        else:
            assert sum(difference) < 0, env_id
            assert stats.ttest_1samp(difference, 0.0, alternative="less").pvalue < 0.05, env_id


def test_an_agent_entry_can_play_fewer_episodes_than_the_suite(tmp_path: Path) -> None:
    bandit = "agentbench/GaussianBandit-5arms-low-button-v0"
    suite = suite_from_dict(
        {"episodes": 5, "agents": ["random", {"name": "ucb", "episodes": 2}], "envs": [bandit]}
    )
    result = run_suite(suite, tmp_path / "run", make_agent, progress=False)
    seeds = {}
    for episode in result.episodes:
        seeds.setdefault(episode.agent, []).append(episode.seed)
    assert seeds == {"random": [0, 1, 2, 3, 4], "ucb": [0, 1]}
    suite.agents = [{"name": "ucb", "episodes": 9}]
    with pytest.raises(ConfigError, match="episodes must be an integer from 1 to the suite's 5"):
        run_suite(suite, tmp_path / "other", make_agent, progress=False)
