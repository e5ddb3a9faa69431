"""Paired comparisons: each agent against a reference on the seeds both played."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agentbench.analysis.paired import paired_comparisons
from agentbench.baselines import make_agent
from agentbench.cli import main
from agentbench.errors import ConfigError
from agentbench.metrics import episode_coverage, episode_cumulative_regret, episode_suffix_failure
from agentbench.records import EpisodeWriter
from agentbench.rollout import play

BANDIT = "agentbench/GaussianBandit-5arms-medium-button-v0"
SHORT = f"{BANDIT}(horizon=20)"  # the bandit made with horizon 20: its episodes' env name
TICTACTOE = "agentbench/TicTacToe-random-v0"


def _episodes():
    ucb = play(make_agent("ucb"), BANDIT, range(8), env_kwargs={"horizon": 20})
    greedy = play(make_agent("greedy"), BANDIT, range(2, 12), env_kwargs={"horizon": 20})
    games = play(make_agent("random"), TICTACTOE, range(4))
    return ucb, greedy, games


def test_differences_are_per_seed_on_the_shared_seeds_only() -> None:
    ucb, greedy, games = _episodes()
    comparisons = paired_comparisons([*ucb, *greedy, *games], "ucb")
    # tic-tac-toe has no ucb: left out; the bandit compares greedy on seeds 2..7
    assert {c.env_id for c in comparisons} == {SHORT}
    by_metric = {c.metric: c for c in comparisons}
    assert set(by_metric) == {"final_regret", "coverage", "greedy_fraction", "suffix_failure",
                              "return", "invalid_rate"}  # fmt: skip
    shared_ucb = [ep for ep in ucb if ep.seed >= 2]
    shared_greedy = [ep for ep in greedy if ep.seed < 8]
    regret = by_metric["final_regret"]
    assert regret.agent == "greedy" and regret.reference == "ucb" and regret.difference.n == 6
    mine = [episode_cumulative_regret(ep)[-1] for ep in shared_greedy]
    theirs = [episode_cumulative_regret(ep)[-1] for ep in shared_ucb]
    assert regret.agent_value.mean == pytest.approx(np.mean(mine))
    assert regret.reference_value.mean == pytest.approx(np.mean(theirs))
    assert regret.difference.mean == pytest.approx(np.mean(np.subtract(mine, theirs)))
    # the paired interval is the t interval of the differences, not of the two means
    differences = np.subtract(mine, theirs)
    half = regret.difference.high - regret.difference.mean
    from scipy import stats

    expected = stats.t.ppf(0.975, 5) * differences.std(ddof=1) / np.sqrt(6)
    assert half == pytest.approx(expected)
    coverage = by_metric["coverage"]
    assert coverage.reference_value.mean == pytest.approx(
        np.mean([episode_coverage(ep)[-1] for ep in shared_ucb])
    )


def test_reference_by_part_of_its_label_and_clear_errors() -> None:
    ucb, greedy, _ = _episodes()
    assert paired_comparisons([*ucb, *greedy], "gree", ["return"])[0].reference == "greedy"
    epsilon = play(make_agent("epsilon-greedy"), BANDIT, range(2), env_kwargs={"horizon": 20})
    with pytest.raises(ConfigError, match="matches several agents"):
        paired_comparisons([*ucb, *greedy, *epsilon], "eed", ["return"])
    # the exact label wins over labels that contain it
    assert paired_comparisons([*ucb, *greedy, *epsilon], "greedy", ["return"])[0].reference == (
        "greedy"
    )
    with pytest.raises(ConfigError, match="unknown metrics"):
        paired_comparisons(ucb, "ucb", ["regret"])


def test_compare_from_the_command_line(tmp_path: Path, capsys) -> None:
    ucb, greedy, games = _episodes()
    run = tmp_path / "run"
    run.mkdir()
    with EpisodeWriter(run / "episodes.jsonl") as writer:
        for episode in [*ucb, *greedy, *games]:
            writer.write(episode)
    out = tmp_path / "paired"
    assert main(["compare", str(run), "--reference", "ucb", "--metrics", "final_regret",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| greedy | final_regret |" in printed
    assert (out / "paired.md").read_text().startswith(f"### {SHORT} (reference: ucb)")
    (row,) = json.loads((out / "paired.json").read_text())
    assert row["metric"] == "final_regret" and row["difference"]["n"] == 6
    assert main(["compare", str(run), "--reference", "thompson"]) == 2
    assert "no agent shares seeds with reference 'thompson'" in capsys.readouterr().err


def test_zero_one_metrics_get_wilson_intervals_and_differences_t_intervals() -> None:
    from agentbench.metrics import t_interval, wilson_interval

    ucb, greedy, _ = _episodes()
    (failure,) = paired_comparisons([*ucb, *greedy], "ucb", ["suffix_failure"])
    mine = [episode_suffix_failure(ep) for ep in greedy if ep.seed < 8]
    theirs = [episode_suffix_failure(ep) for ep in ucb if ep.seed >= 2]
    assert failure.agent_value == wilson_interval(int(sum(mine)), 6)
    assert failure.reference_value == wilson_interval(int(sum(theirs)), 6)
    assert failure.difference == t_interval(np.subtract(mine, theirs))
