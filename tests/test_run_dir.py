"""A run directory never holds wrong data: one writer at a time, every episode once,
every finished episode kept on resume; and a run built from flags says what it ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentbench.cli import main
from agentbench.records import read_episodes

BANDIT = "agentbench/GaussianBandit-5arms-low-button-v0"
SLOW_SUITE = """
name = "lock-test"
episodes = 300
num_envs = 2
agents = ["ucb", "thompson"]
envs = ["agentbench/GaussianBandit-20arms-high-button-v0"]
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agentbench.cli", "run", *args, "--no-progress"]


def test_a_second_run_into_a_busy_directory_fails_and_the_first_writes_each_episode_once(
    tmp_path: Path,
) -> None:
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(SLOW_SUITE)
    out = tmp_path / "run"
    first = subprocess.Popen(_cli(str(suite_file), "--out", str(out)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    episodes = out / "episodes.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if episodes.exists() and episodes.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.01)
    # Hold the first run mid-way, so the second surely starts while it is alive.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(_cli(str(suite_file), "--out", str(out)),
                                capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    assert second.returncode == 2, second.stdout + second.stderr
    message = second.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert str(out) in message and "another agentbench run" in message
    keys = [ep.key for ep in read_episodes(episodes)]
    assert episodes.read_bytes().count(b"\n") == len(keys) == len(set(keys)) == 600
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(row["n_episodes"] for row in metrics) == [300, 300]
    # The lock goes with the process: a later run into the same directory resumes.
    assert main(["run", str(suite_file), "--out", str(out), "--no-progress"]) == 0


def test_a_killed_run_releases_the_directory(tmp_path: Path) -> None:
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(SLOW_SUITE)
    out = tmp_path / "run"
    process = subprocess.Popen(_cli(str(suite_file), "--out", str(out)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "episodes.jsonl").exists():
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert main(["run", str(suite_file), "--out", str(out), "--no-progress"]) == 0
    assert len(read_episodes(out / "episodes.jsonl")) == 600


def _tiny_run(out: Path, episodes: int = 4) -> int:
    return main(["run", "--env", BANDIT, "--agent", "ucb", "--episodes", str(episodes),
                 "--out", str(out), "--no-progress"])  # fmt: skip


def test_a_last_line_without_its_newline_is_kept_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _tiny_run(out) == 0
    episodes = out / "episodes.jsonl"
    lines = episodes.read_bytes().split(b"\n")[:-1]
    assert len(lines) == 4
    # Killed after writing a whole record but before its newline.
    episodes.write_bytes(b"\n".join(lines))
    assert read_episodes(episodes)[-1].seed == 3
    assert _tiny_run(out) == 0
    assert episodes.read_bytes() == b"\n".join(lines) + b"\n"
    (row,) = json.loads((out / "metrics.json").read_text())
    assert row["n_episodes"] == 4


def test_a_resume_appends_after_a_last_line_without_its_newline(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _tiny_run(out) == 0
    episodes = out / "episodes.jsonl"
    lines = episodes.read_bytes().split(b"\n")[:-1]
    episodes.write_bytes(b"\n".join(lines[:2]))  # two episodes, the second without "\n"
    assert _tiny_run(out) == 0
    assert episodes.read_bytes() == b"\n".join(lines) + b"\n"  # seeds 2, 3 played again
    assert [ep.seed for ep in read_episodes(episodes)] == [0, 1, 2, 3]
    (row,) = json.loads((out / "metrics.json").read_text())
    assert row["n_episodes"] == 4


def test_duplicate_episodes_are_read_once_and_reported(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _tiny_run(out) == 0
    episodes = out / "episodes.jsonl"
    reference = json.loads((out / "metrics.json").read_text())
    text = episodes.read_text()
    episodes.write_text(text + text)  # as two unlocked runs used to leave it
    with pytest.warns(UserWarning, match="4 duplicate episode records"):
        assert [ep.seed for ep in read_episodes(episodes)] == [0, 1, 2, 3]
    with pytest.warns(UserWarning, match="duplicate"):
        assert _tiny_run(out) == 0
    assert json.loads((out / "metrics.json").read_text()) == reference


def test_a_run_built_from_flags_is_described_by_what_it_ran(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", "--env", BANDIT, "--agent", "ucb", "--agent", "random",
                 "--episodes", "3", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    suite = config["suite"]
    assert suite["agents"] == [{"name": "ucb"}, {"name": "random"}]
    assert suite["envs"] == [{"id": BANDIT, "kwargs": {}}] and suite["episodes"] == 3
    assert suite["name"] != "default"
    assert "SmolLM2" not in suite["description"] and "tic-tac-toe" not in suite["description"]
    assert "ucb" in suite["description"] and "random" in suite["description"]
    summary = (out / "summary.md").read_text()
    assert "Suite `default`" not in summary and "SmolLM2" not in summary
    assert "ucb, random" in summary and "GaussianBandit-5arms-low-button-v0" in summary
    # Only --agent: the suite's envs, described as such.
    other = tmp_path / "agents-only"
    assert main(["run", "--agent", "random", "--episodes", "1", "--num-envs", "1",
                 "--out", str(other), "--no-progress"]) == 0  # fmt: skip
    summary = (other / "summary.md").read_text()
    assert "SmolLM2" not in summary and "Suite `default`" not in summary
    assert "envs of suite `default`" in summary


SETTINGS_SUITE = """
name = "env-settings"
episodes = 3
num_envs = 3
agents = ["random", { name = "epsilon-greedy", epsilon = 0.5 }]

[[envs]]
id = "agentbench/GaussianBandit-5arms-low-button-v0"

[[envs]]
id = "agentbench/GaussianBandit-5arms-low-button-v0"
kwargs = { horizon = 7 }
"""


def test_a_suite_plays_one_env_id_with_two_settings_apart_and_resumes_them(
    tmp_path: Path,
) -> None:
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(SETTINGS_SUITE)
    out = tmp_path / "run"
    assert main(["run", str(suite_file), "--out", str(out), "--no-progress"]) == 0
    episodes = read_episodes(out / "episodes.jsonl")
    short = f"{BANDIT}(horizon=7)"
    lengths = {(ep.env_name, len(ep.steps)) for ep in episodes}
    assert lengths == {(BANDIT, 50), (short, 7)}
    assert {ep.env_id for ep in episodes} == {BANDIT}  # the id stays the registered one
    assert all(ep.env_kwargs == {"horizon": 7} for ep in episodes if ep.env_name == short)
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted({row["env_id"] for row in metrics}) == [BANDIT, short]
    assert {row["n_episodes"] for row in metrics} == {3}
    assert short.removeprefix("agentbench/") in (out / "summary.md").read_text()
    # Resuming finds all 12 episodes on disk, for both settings.
    before = (out / "episodes.jsonl").read_text()
    assert main(["run", str(suite_file), "--out", str(out), "--no-progress"]) == 0
    assert (out / "episodes.jsonl").read_text() == before


def test_env_settings_from_the_command_line_and_agent_options(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", "--env", f"{BANDIT},horizon=4", "--agent", "epsilon-greedy,epsilon=1.0",
                 "--episodes", "2", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    suite = json.loads((out / "config.json").read_text())["suite"]
    assert suite["envs"] == [{"id": BANDIT, "kwargs": {"horizon": 4}}]
    assert suite["agents"] == [{"name": "epsilon-greedy", "epsilon": 1.0}]
    (episode, _) = read_episodes(out / "episodes.jsonl")
    assert episode.agent == "epsilon-greedy(epsilon=1.0)" and len(episode.steps) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", f"{BANDIT},no_such_setting=1"], "takes no keyword argument 'no_such_setting'"),
        (["--env", "horizon=4"], "the name comes first"),
        (["--env", f"{BANDIT},horizon"], "is not KEY=VALUE"),
        (["--agent", "epsilon-greedy,no_such_option=1"], "bad arguments"),
    ],
)
def test_bad_env_settings_and_agent_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["run", *args, "--episodes", "1", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_a_run_written_before_envs_took_settings_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _tiny_run(out) == 0
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    envs = config["suite"].pop("envs")
    config["suite"]["env_ids"] = [env["id"] for env in envs]  # the earlier layout
    config_path.write_text(json.dumps(config))
    before = (out / "episodes.jsonl").read_text()
    assert _tiny_run(out) == 0
    assert (out / "episodes.jsonl").read_text() == before
