"""`agentbench analyze` and `agentbench report` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from agentbench.agent import factory
from agentbench.cli import main
from agentbench.testing.planted import KnowingButGreedyModel


def test_analyze_then_report_from_the_command_line(tmp_path: Path, monkeypatch, capsys) -> None:
    # The CLI loads models through the factory; serve it a planted model by name.
    monkeypatch.setitem(factory._GENERATORS, ("planted-knowing", ()), KnowingButGreedyModel())
    analysis = tmp_path / "analysis"
    code = main(["analyze", "--model", "planted-knowing", "--prefixes", "2",
                 "--repetition-step", "50", "--histories", "8", "--budget", "64",
                 "--out", str(analysis)])  # fmt: skip
    assert code == 0
    knowing = json.loads((analysis / "knowing_doing.json").read_text())
    assert knowing["n"] == 8 and knowing["knowing_rate"] == 1.0
    frequency = json.loads((analysis / "frequency_bias.json").read_text())
    assert frequency["forward_passes"] == 2 * 3  # 2 prefixes x repetitions 0, 50, 100

    run = tmp_path / "run"
    assert main(["run", "--env", "agentbench/GaussianBandit-5arms-low-button-v0",
                 "--agent", "ucb", "--agent", "random", "--episodes", "4",
                 "--out", str(run), "--no-progress"]) == 0  # fmt: skip
    report = tmp_path / "report"
    assert main(["report", str(run), str(analysis), "--out", str(report)]) == 0
    markdown = (report / "report.md").read_text()
    assert "Knowing-doing" in markdown or "knowing-doing" in markdown.lower()
    assert "GaussianBandit-5arms-low-button-v0" in markdown
    assert (report / "report.html").stat().st_size > 10_000
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(report)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["analyze", "--env", "agentbench/Nope-v0", "--out", str(analysis)]) == 2


def test_knowing_doing_on_a_runs_own_trajectories(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(factory._GENERATORS, ("planted-knowing", ()), KnowingButGreedyModel())
    env = "agentbench/GaussianBandit-5arms-low-button-v0"
    run = tmp_path / "run"
    assert main(["run", "--env", env, "--agent", "ucb", "--agent", "random", "--episodes", "2",
                 "--out", str(run), "--no-progress"]) == 0  # fmt: skip
    analysis = tmp_path / "analysis"
    common = ["analyze", "--model", "planted-knowing", "--probe", "knowing-doing", "--env", env,
              "--histories", "4", "--budget", "64", "--out", str(analysis)]  # fmt: skip
    assert main([*common, "--trajectories", str(run), "--agent", "ucb"]) == 0
    knowing = json.loads((analysis / "knowing_doing.json").read_text())
    assert knowing["histories"] == "episodes of ucb" and knowing["n"] == 4
    capsys.readouterr()
    assert main([*common, "--trajectories", str(run)]) == 2  # two agents: which one?
    assert "name one with --agent: random, ucb" in capsys.readouterr().err
    assert main([*common, "--agent", "ucb"]) == 2
    assert "give --trajectories" in capsys.readouterr().err


def test_decisions_at_k_from_the_command_line_into_the_report(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from agentbench.testing.planted import GreedyModel

    monkeypatch.setitem(factory._GENERATORS, ("planted-greedy", ()), GreedyModel())
    analysis = tmp_path / "analysis"
    assert main(["analyze", "--model", "planted-greedy", "--probe", "decision-at-k",
                 "--env", "agentbench/GaussianBandit-5arms-low-button-v0", "--histories", "6",
                 "--samples", "4", "--k", "1,4", "--out", str(analysis)]) == 0  # fmt: skip
    data = json.loads((analysis / "decision_at_k.json").read_text())
    assert data["n_samples"] == 4 and sorted(data["metrics"]["pass"]) == ["1", "4"]
    # a deterministic model: its 4 samples agree, so pass@4 = pass@1 = maj@4
    assert (
        data["metrics"]["pass"]["4"] == data["metrics"]["pass"]["1"] == data["metrics"]["maj"]["4"]
    )
    report = tmp_path / "report"
    assert main(["report", str(analysis), "--out", str(report)]) == 0
    markdown = (report / "report.md").read_text()
    assert "## Decisions at k samples" in markdown and "| pass@k |" in markdown
    capsys.readouterr()
    assert main(["analyze", "--probe", "decision-at-k", "--k", "1,x", "--out", str(analysis)]) == 2
    assert "--k takes whole numbers" in capsys.readouterr().err


def test_knowing_doing_sampled_k_times_into_the_report(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(factory._GENERATORS, ("planted-knowing", ()), KnowingButGreedyModel())
    analysis = tmp_path / "analysis"
    assert main(["analyze", "--model", "planted-knowing", "--probe", "knowing-doing",
                 "--histories", "4", "--samples", "3", "--budget", "64",
                 "--out", str(analysis)]) == 0  # fmt: skip
    data = json.loads((analysis / "knowing_doing.json").read_text())
    assert data["n"] == 12 and data["samples"] == 3
    assert data["at_k"]["knowing"]["pass"]["3"]["mean"] == 1.0  # it always knows
    report = tmp_path / "report"
    assert main(["report", str(analysis), "--out", str(report)]) == 0
    markdown = (report / "report.md").read_text()
    assert "### Knowing and doing at k samples" in markdown and "| knowing pass@k |" in markdown
