"""`agentbench export`: runs as one flat table per step and one per episode, the same in
CSV and JSONL, with the values of the records and of agentbench.metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from agentbench import metrics
from agentbench.cli import main
from agentbench.export import EPISODE_COLUMNS, STEP_COLUMNS, export_runs
from agentbench.records import Episode, Step, read_episodes, write_episodes

BANDIT = "agentbench/GaussianBandit-5arms-low-button-v0"
TICTACTOE = "agentbench/TicTacToe-random-v0"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Episode]]:
    """Three runs: baselines on a bandit (a directory), random at tic-tac-toe (a
    directory), and an LLM agent's steps of every kind (an episodes file)."""
    root = tmp_path_factory.mktemp("runs")
    bandit, tictactoe = root / "bandit", root / "tictactoe"
    assert main(["run", "--env", f"{BANDIT},horizon=8", "--agent", "ucb", "--agent", "random",
                 "--episodes", "3", "--out", str(bandit), "--no-progress"]) == 0  # fmt: skip
    assert main(["run", "--env", TICTACTOE, "--agent", "random", "--episodes", "3",
                 "--out", str(tictactoe), "--no-progress"]) == 0  # fmt: skip
    llm = root / "llm.jsonl"
    write_episodes(llm, _llm_episodes())
    return {
        str(bandit): read_episodes(bandit / "episodes.jsonl"),
        str(tictactoe): read_episodes(tictactoe / "episodes.jsonl"),
        str(llm): read_episodes(llm),
    }


def _llm_episodes() -> list[Episode]:
    """A valid, a forced, an invalid and a try-all step; and a one-step episode, whose
    greedy fraction is undefined (NaN)."""

    def step(t: int, action: int, **fields: object) -> Step:
        return Step(t=t, action=action, label="abc"[action], reward=float(action),
                    expected_reward=0.5 * action, optimal_action=2, regret=1.0 - 0.5 * action,
                    **fields)  # fmt: skip

    steps = [
        step(1, 0, proposed=0, text="ACTION=a"),
        step(2, 1, valid=False, forced=True, forced_probability=0.75, text="I would pick"),
        step(3, 2, valid=False, text="no idea"),
        step(4, 1, proposed=1, mechanism="try-all", shown_labels=["c", "a", "b"]),
    ]
    settings = {"model": "tiny", "answer_forcing": True}
    common = dict(agent="llm(model=tiny)", env_id=BANDIT, n_actions=3, family="mab",
                  action_labels=["a", "b", "c"], agent_settings=settings)  # fmt: skip
    return [Episode(seed=0, steps=steps, **common), Episode(seed=1, steps=steps[:1], **common)]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_one_row_per_step_and_per_episode_with_the_records_values(runs, tmp_path) -> None:
    exported = export_runs(runs, tmp_path, "jsonl")
    episodes = [(run, ep) for run, eps in runs.items() for ep in eps]
    steps = _read_jsonl(exported.steps)
    rows = _read_jsonl(exported.episodes)
    assert exported.n_steps == len(steps) == sum(len(ep.steps) for _, ep in episodes)
    assert exported.n_episodes == len(rows) == len(episodes)
    assert all(list(row) == list(STEP_COLUMNS) for row in steps)
    assert all(list(row) == list(EPISODE_COLUMNS) for row in rows)

    at = 0
    for (run, episode), row in zip(episodes, rows, strict=True):
        assert (row["run"], row["agent"], row["seed"]) == (run, episode.agent, episode.seed)
        assert (row["env"], row["env_id"]) == (episode.env_name, episode.env_id)
        assert json.loads(row["env_kwargs"]) == episode.env_kwargs
        assert json.loads(row["agent_settings"]) == episode.agent_settings
        assert row["steps"] == len(episode.steps) and row["total_reward"] == episode.total_reward
        ours = steps[at : at + len(episode.steps)]
        at += len(episode.steps)
        assert [s["step"] for s in ours] == [step.t for step in episode.steps]
        assert [s["action"] for s in ours] == [step.action for step in episode.steps]
        assert [s["reward"] for s in ours] == [step.reward for step in episode.steps]
        assert [s["regret"] for s in ours] == [step.regret for step in episode.steps]
        assert ours[-1]["cumulative_reward"] == pytest.approx(episode.total_reward)
        if episode.family == "tictactoe":
            assert row["outcome"] == episode.outcome in metrics.OUTCOMES
            assert row["final_regret"] is row["coverage"] is row["suffix_failure"] is None
            assert all(s["cumulative_regret"] is None for s in ours)
            assert json.loads(ours[0]["observation"]) == episode.steps[0].observation
            assert ours[0]["state"] == episode.steps[0].state != ""
        else:
            cumulative = metrics.episode_cumulative_regret(episode)
            assert [s["cumulative_regret"] for s in ours] == cumulative.tolist()
            assert row["final_regret"] == cumulative[-1]
            assert row["coverage"] == metrics.episode_coverage(episode)[-1]
            assert row["suffix_failure"] == metrics.episode_suffix_failure(episode)
            assert row["k_minfrac"] == metrics.episode_k_minfrac(episode)
            assert row["outcome"] is None and ours[0]["state"] is None  # "" is missing
    assert at == len(steps)
    assert {row["run"] for row in rows} == set(runs)


def test_llm_steps_valid_forced_and_invalid(runs, tmp_path) -> None:
    run = next(run for run in runs if run.endswith(".jsonl"))
    exported = export_runs({run: runs[run]}, tmp_path, "jsonl")
    steps, (four_steps, one_step) = _read_jsonl(exported.steps), _read_jsonl(exported.episodes)
    assert [s["status"] for s in steps] == ["valid", "forced", "invalid", "valid", "valid"]
    assert [s["valid"] for s in steps[:4]] == [True, False, False, True]
    assert [s["forced"] for s in steps[:4]] == [False, True, False, False]
    assert [s["proposed"] for s in steps[:4]] == [0, None, None, 1]
    assert [s["forced_probability"] for s in steps[:4]] == [None, 0.75, None, None]
    assert [s["text"] for s in steps[:4]] == ["ACTION=a", "I would pick", "no idea", None]
    assert [s["mechanism"] for s in steps[:4]] == [None, None, None, "try-all"]
    assert json.loads(steps[3]["shown_labels"]) == ["c", "a", "b"]
    assert steps[0]["observation"] is None
    episode = runs[run][0]
    assert four_steps["invalid_share"] == metrics.episode_invalid_share(episode) == 0.25
    assert four_steps["forced_share"] == metrics.episode_forced_share(episode) == 0.25
    assert four_steps["greedy_fraction"] == metrics.episode_greedy_fraction(episode)
    assert json.loads(four_steps["agent_settings"])["answer_forcing"] is True
    # an undefined metric is null in JSONL and an empty cell in CSV, never NaN
    assert np.isnan(metrics.episode_greedy_fraction(runs[run][1]))
    assert one_step["greedy_fraction"] is None
    assert "NaN" not in exported.episodes.read_text()
    export_runs({run: runs[run]}, tmp_path, "csv")
    assert _read_csv(tmp_path / "episodes.csv")[1]["greedy_fraction"] == ""


def test_csv_and_jsonl_load_to_the_same_numeric_tables_in_pandas(runs, tmp_path) -> None:
    import pandas  # in the dev extra; imported here so that the other tests run without it

    for file_format in ("csv", "jsonl"):
        (tmp_path / file_format).mkdir()
        export_runs(runs, tmp_path / file_format, file_format)
    for table, numeric in [
        ("steps", ["seed", "step", "action", "reward", "cumulative_reward", "regret",
                   "cumulative_regret", "expected_reward", "coverage", "forced_probability"]),
        ("episodes", ["seed", "n_actions", "steps", "total_reward", "final_regret", "coverage",
                      "greedy_fraction", "suffix_failure", "invalid_share", "forced_share"]),
    ]:  # fmt: skip
        from_csv = pandas.read_csv(tmp_path / "csv" / f"{table}.csv")
        from_jsonl = pandas.read_json(tmp_path / "jsonl" / f"{table}.jsonl", lines=True)
        # JSONL's integral floats (shares of 0.0) load as int64; the values are the same
        pandas.testing.assert_frame_equal(from_csv, from_jsonl, check_dtype=False)
        for frame in (from_csv, from_jsonl):
            columns = STEP_COLUMNS if table == "steps" else EPISODE_COLUMNS
            assert list(frame.columns) == list(columns)
            for column in numeric:
                assert pandas.api.types.is_numeric_dtype(frame[column]), (table, column)
    steps = pandas.read_csv(tmp_path / "csv" / "steps.csv")
    assert steps["valid"].dtype == bool
    assert len(steps) == sum(len(ep.steps) for eps in runs.values() for ep in eps)
    episodes = pandas.read_csv(tmp_path / "csv" / "episodes.csv")
    assert len(episodes) == sum(len(eps) for eps in runs.values())


def test_export_from_the_command_line(runs, tmp_path, capsys, monkeypatch) -> None:
    sources = list(runs)
    out = tmp_path / "tables"
    assert main(["export", *sources, "--out", str(out)]) == 0
    n_steps = sum(len(ep.steps) for eps in runs.values() for ep in eps)
    n_episodes = sum(len(eps) for eps in runs.values())
    printed = capsys.readouterr().out
    assert f"({n_steps} rows)" in printed and f"({n_episodes} rows)" in printed
    assert len(_read_csv(out / "steps.csv")) == n_steps
    assert len(_read_csv(out / "episodes.csv")) == n_episodes
    assert main(["export", sources[0], "--format", "jsonl", "--out", str(out)]) == 0
    assert len(_read_jsonl(out / "episodes.jsonl")) == len(runs[sources[0]])
    # the default directory is export/ in the working directory
    monkeypatch.chdir(tmp_path)
    assert main(["export", sources[1]]) == 0
    assert len(_read_csv(tmp_path / "export" / "episodes.csv")) == len(runs[sources[1]])


def test_bad_inputs_are_one_line_errors(runs, tmp_path, capsys) -> None:
    run = next(iter(runs))
    not_records = tmp_path / "notes.jsonl"
    not_records.write_text("hello\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    out = str(tmp_path / "out")
    for args, named in [
        ([str(tmp_path / "nowhere"), "--out", out], "nowhere is neither a run directory"),
        ([str(not_records), "--out", out], "notes.jsonl:1 is not an episode record"),
        ([str(empty), "--out", out], "empty.jsonl holds no episodes"),
        ([run, run, "--out", out], "is given twice"),
        ([run, "--out", str(a_file)], "is a file, not a directory"),
    ]:
        capsys.readouterr()
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert named in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "steps.csv").exists()
