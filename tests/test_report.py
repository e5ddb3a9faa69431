"""The greediness analysis and the report, on small runs of the real baselines and probe files.

The runs are played by the suite runner (seconds), so the report reads exactly
what a user's run directory holds; probe results are hand-written in the
schema the probes write.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentbench import metrics
from agentbench.agent.llm import LLMAgentSettings
from agentbench.analysis.greediness import (
    LLMSetting,
    analyse_runs,
    llm_setting,
    parse_agent_label,
)
from agentbench.analysis.report import ReportPaths, write_report
from agentbench.baselines import make_agent
from agentbench.errors import ConfigError
from agentbench.records import Episode, Step, read_episodes, write_episodes
from agentbench.suite import EPISODES_FILE, run_suite, suite_from_dict

BANDIT = "agentbench/GaussianBandit-5arms-low-button-v0"
TICTACTOE = "agentbench/TicTacToe-random-v0"
MALICIOUS = "<script>alert(1)</script>"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _make_agent(name: str, **kwargs: Any):
    """The baselines, plus a random agent registered under a hostile name."""
    return make_agent("random") if name == MALICIOUS else make_agent(name, **kwargs)


def _run(out: Path, envs: list[str], agents: list[Any], seed: int = 0, episodes: int = 8) -> Path:
    suite = suite_from_dict(
        {
            "name": out.name,
            "envs": envs,
            "agents": agents,
            "episodes": episodes,
            "seed": seed,
            "num_envs": 8,
        }
    )
    run_suite(suite, out, _make_agent, progress=False)
    return out


def _probe_dir(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    points = [
        {
            "prefix_length": 3,
            "repetitions": r,
            "target": 0,
            "argmax": 0,
            "class": "frequent",
            "entropy": float(1.5 - 0.01 * r + rng.normal(0, 0.05)),
        }
        for r in range(0, 101, 5)
    ]
    frequency_bias = {
        "probe": "frequency_bias",
        "model": "tiny-<b>model</b>",
        "env_id": BANDIT,
        "seed": 0,
        "forward_passes": len(points),
        "points": points,
        "buckets": {
            "0-10": {"frequent": 0.2, "greedy": 0.5, "other": 0.3, "n": 3, "mean_entropy": 1.45},
            "45-55": {"frequent": 0.5, "greedy": 0.3, "other": 0.2, "n": 3, "mean_entropy": 1.0},
            "90-100": {"frequent": 0.9, "greedy": 0.1, "other": 0.0, "n": 3, "mean_entropy": 0.5},
        },
        "correlation": {"pearson_r": -0.93, "p_value": 1e-9, "spearman_rho": -0.9},
    }
    knowing_doing = {
        "probe": "knowing_doing",
        "model": "tiny",
        "env_id": BANDIT,
        "seed": 0,
        "ucb_c": 2.0,
        "n": 50,
        "table": {
            "correct": {"optimal": 22.0, "greedy": 58.0, "other": 8.0},
            "incorrect": {"optimal": 2.0, "greedy": 6.0, "other": 4.0},
        },
        "knowing_rate": 0.88,
        "unparsed": 3,
        "invalid_actions": 5,
        "records": [],
    }
    (folder / "frequency_bias.json").write_text(json.dumps(frequency_bias))
    (folder / "knowing_doing_ucb2.json").write_text(json.dumps(knowing_doing))
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReportPaths]:
    """'before': baselines on a bandit and tic-tac-toe, seeds 0..7; 'after': UCB and greedy on
    the bandit, seeds 4..11 (no random: its paired baseline must come from 'before')."""
    root = tmp_path_factory.mktemp("report")
    before = _run(
        root / "before", [BANDIT, TICTACTOE], ["ucb", "random", "greedy", "minimax", MALICIOUS]
    )
    after = _run(root / "after", [BANDIT], ["ucb", "greedy"], seed=4)
    probes = _probe_dir(root / "probes")
    return root, write_report([before, after, probes], root / "out")


def _section(markdown: str, heading: str) -> str:
    """The text of one section, from its heading to the next heading of any level."""
    start = markdown.index(heading)
    following = re.search(r"^#{1,6} ", markdown[start + len(heading) :], flags=re.M)
    end = start + len(heading) + following.start() if following else len(markdown)
    return markdown[start:end]


def _table_rows(section: str) -> list[list[str]]:
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]  # no header, no rule


def test_report_files_exist_and_every_markdown_image_is_a_png(report) -> None:
    _, paths = report
    assert paths.markdown.is_file() and paths.html.is_file() and paths.analysis.is_file()
    markdown = paths.markdown.read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", markdown)
    assert len(images) == len(set(images)) == len(paths.plots)
    for image in images:
        data = (paths.markdown.parent / image).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert {paths.markdown.parent / image for image in images} == set(paths.plots_dir.iterdir())
    names = {Path(image).stem for image in images}
    for expected in (
        "coverage_GaussianBandit-5arms-low-button-v0",
        "regret_GaussianBandit-5arms-low-button-v0",
        "actions_TicTacToe-random-v0",
        "tictactoe_outcomes",
        "frequency_bias_entropy",
        "frequency_bias_buckets",
    ):
        assert expected in names
    assert any(name.startswith("knowing_doing") for name in names)
    assert "invalid_rates" not in names  # baselines never answer invalidly: no empty plot


def test_html_is_self_contained_and_escapes_data(report) -> None:
    _, paths = report
    page = paths.html.read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(paths.plots) == page.count("<img")
    for data in images:
        assert base64.b64decode(data, validate=True).startswith(PNG_SIGNATURE)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "tiny-&lt;b&gt;model&lt;/b&gt;" in page  # a probe's model name is data too
    assert "<script>" not in paths.markdown.read_text(encoding="utf-8")


def test_two_runs_appear_side_by_side_in_the_comparison(report) -> None:
    root, paths = report
    markdown = paths.markdown.read_text(encoding="utf-8")
    table = _section(markdown, "### Multi-armed bandits")
    header = next(line for line in table.splitlines() if line.startswith("| env"))
    for column in ("before: ucb", "before: greedy", "after: ucb", "after: greedy"):
        assert f" {column} |" in header
    (row,) = _table_rows(table)
    after_ucb = metrics.final_regret(
        [ep for ep in read_episodes(root / "after" / EPISODES_FILE) if ep.agent == "ucb"]
    )
    assert row[header.strip("|").split(" | ").index("after: ucb")].startswith(
        f"{after_ucb.mean:.2f} ± "
    )


def test_greediness_numbers_equal_those_of_metrics(report) -> None:
    root, paths = report
    episodes = read_episodes(root / "before" / EPISODES_FILE)
    analysis = json.loads(paths.analysis.read_text(encoding="utf-8"))
    rows = _table_rows(_section(paths.markdown.read_text(encoding="utf-8"), "## Greediness"))
    assert len(rows) == 4 + 2  # before: 4 bandit agents, after: 2
    for agent in ("ucb", "random", "greedy", MALICIOUS):
        group = [ep for ep in episodes if ep.agent == agent and ep.env_id == BANDIT]
        expected = {
            "coverage": metrics.final_coverage(group),
            "greedy_fraction": metrics.greedy_fraction(group),
            "suffix_failure": metrics.suffix_failure(group),
            "k_minfrac": metrics.k_minfrac(group),
            "final_regret": metrics.final_regret(group),
        }
        (found,) = [
            g
            for g in analysis["groups"]
            if g["source"] == "before" and g["agent"] == agent and g["env_id"] == BANDIT
        ]
        for name, estimate in expected.items():
            assert found[name] == estimate.to_dict()
        assert found["curves"]["coverage"] == metrics.coverage_curve(group).to_dict()
        shares = found["action_histogram"]["shares"]
        actions = [step.action for ep in group for step in ep.steps]
        assert shares == pytest.approx(np.bincount(actions, minlength=5) / len(actions))
        name = "before: " + agent.replace("<", "&lt;").replace(">", "&gt;")
        (row,) = [r for r in rows if r[1] == name]
        for cell, estimate in zip(row[3:], expected.values(), strict=True):
            assert cell.startswith(f"{estimate.mean:.2f} ± ")
    greedy_row = next(r for r in rows if r[1] == "before: greedy")
    random_row = next(r for r in rows if r[1] == "before: random")
    assert float(greedy_row[4].split()[0]) > float(random_row[4].split()[0])  # greedier


def test_paired_regret_uses_shared_seeds_and_prefers_the_own_run(report) -> None:
    root, paths = report
    before = read_episodes(root / "before" / EPISODES_FILE)
    after = read_episodes(root / "after" / EPISODES_FILE)
    final = {
        (ep.agent, ep.seed): metrics.episode_cumulative_regret(ep)[-1]
        for ep in after + before
        if ep.env_id == BANDIT
    }
    analysis = json.loads(paths.analysis.read_text(encoding="utf-8"))
    pairs = {(p["source"], p["agent"], p["reference"]): p for p in analysis["paired_regret"]}
    assert ("before", "ucb", "random") not in pairs  # references are not compared to each other

    vs_random = pairs[("after", "greedy", "random")]  # 'after' has no random: taken from 'before'
    assert vs_random["reference_source"] == "before"
    assert vs_random["shared_seeds"] == [4, 5, 6, 7]
    assert (vs_random["agent_seeds"], vs_random["reference_seeds"]) == (8, 8)
    # 'after' greedy episodes are seeds 4..11, 'before' greedy 0..7: build the differences by hand.
    after_greedy = {
        ep.seed: metrics.episode_cumulative_regret(ep)[-1] for ep in after if ep.agent == "greedy"
    }
    differences = [after_greedy[s] - final[("random", s)] for s in (4, 5, 6, 7)]
    assert vs_random["difference"] == metrics.t_interval(differences).to_dict()

    vs_ucb = pairs[("after", "greedy", "ucb")]
    assert vs_ucb["reference_source"] == "after" and vs_ucb["shared_seeds"] == list(range(4, 12))
    rows = _table_rows(_section(paths.markdown.read_text(encoding="utf-8"), "### Paired regret"))
    (row,) = [r for r in rows if r[1] == "after: greedy" and r[2] == "before: random"]
    assert row[3] == "4 (agent 8, baseline 8)"
    assert row[4].startswith(f"{np.mean(differences):.2f} ± ")


def test_settings_table_appears_for_llm_agents_that_differ_in_budget(report, tmp_path) -> None:
    root, _ = report
    episodes = [ep for ep in read_episodes(root / "before" / EPISODES_FILE) if ep.env_id == BANDIT]
    renamed = {
        "greedy": ("llm(model=tiny,budget=32)", LLMAgentSettings(budget=32), "tiny"),
        "random": ("llm(model=tiny,budget=64)", LLMAgentSettings(budget=64), "tiny"),
        "ucb": ("llm(model=other)", LLMAgentSettings(), "other"),
    }
    fake = []
    for episode in episodes:
        if episode.agent in renamed:
            label, settings, model = renamed[episode.agent]
            steps = [dataclasses.replace(step, valid=step.t % 4 != 0) for step in episode.steps]
            recorded = {"model": model, **dataclasses.asdict(settings)}
            fake.append(
                dataclasses.replace(episode, agent=label, steps=steps, agent_settings=recorded)
            )
    run = tmp_path / "llm-run"
    write_episodes(run / EPISODES_FILE, fake)  # a run dir without config.json is fine too
    paths = write_report([run], tmp_path / "out")
    markdown = paths.markdown.read_text(encoding="utf-8")
    section = _section(markdown, "### tiny on GaussianBandit-5arms-low-button-v0")
    rows = _table_rows(section)
    assert [r[0] for r in rows] == ["cot=True, budget=32", "cot=True, budget=64"]
    greedy = [ep for ep in fake if ep.agent == renamed["greedy"][0]]
    assert rows[0][3].startswith(f"{metrics.final_coverage(greedy).mean:.2f}")
    assert rows[0][5].startswith(f"{metrics.invalid_rate(greedy).mean:.2f}")
    assert "### other on" not in markdown  # one setting only: no table
    assert (paths.plots_dir / "invalid_rates.png").is_file()  # a quarter of steps invalid
    main = report[1].markdown.read_text(encoding="utf-8")
    assert "Chain of thought and generation budget" not in main


def test_llm_settings_are_read_from_the_records_not_the_label() -> None:
    recorded = {"model": "m", "cot": False, "budget": 32, "try_all": True}
    assert llm_setting(recorded) == LLMSetting("m", False, 32, (("try_all", "True"),))
    assert llm_setting({"c": 2.0}) is None  # a baseline
    assert llm_setting({}) is None  # a record written before the settings were recorded
    # labels still name agents
    assert parse_agent_label("epsilon-greedy(epsilon=0.2)") == (
        "epsilon-greedy",
        {"epsilon": "0.2"},
    )
    assert parse_agent_label(MALICIOUS) == (MALICIOUS, {})
    assert parse_agent_label("llm(model=a,b,budget=8)")[1] == {"model": "a,b", "budget": "8"}


def test_analyse_runs_keeps_runs_apart() -> None:
    episodes = _tiny_episodes()
    analysis = analyse_runs({"one": episodes, "two": episodes})
    assert [(g.source, g.agent) for g in analysis.groups] == [("one", "a"), ("two", "a")]
    json.dumps(analysis.to_dict())  # plain JSON


def _tiny_episodes() -> list[Episode]:
    steps = [
        Step(
            t=t,
            action=t % 2,
            label=f"arm{t % 2}",
            reward=float(t % 2),
            optimal_action=1,
            regret=0.5 * (t % 2 == 0),
            expected_reward=0.0,
        )
        for t in range(1, 5)
    ]
    return [Episode("a", BANDIT, 0, 2, ["arm0", "arm1"], steps, family="mab")]


def test_bad_sources_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere.*does not exist"):
        write_report([tmp_path / "nowhere"], tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="neither episodes.jsonl nor probe results"):
        write_report([empty], tmp_path / "out")
    (empty / "knowing_doing.json").write_text('{"probe": "knowing_doing", "model": "m"}')
    with pytest.raises(ConfigError, match="knowing_doing.json is malformed"):
        write_report([empty], tmp_path / "out")
    (empty / "knowing_doing.json").write_text("{not json")
    with pytest.raises(ConfigError, match="knowing_doing.json is not valid JSON"):
        write_report([empty], tmp_path / "out")


def test_probe_results_from_the_real_probes_read_into_the_report(tmp_path: Path) -> None:
    from agentbench.analysis.frequency_bias import run_frequency_bias_probe
    from agentbench.analysis.knowing_doing import run_knowing_doing_probe
    from agentbench.testing.planted import FrequencyBiasedModel, KnowingButGreedyModel

    bias = run_frequency_bias_probe(FrequencyBiasedModel(), n_prefixes=2, progress=False)
    gap = run_knowing_doing_probe(KnowingButGreedyModel(), n_histories=10, progress=False)
    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "frequency_bias_planted.json").write_text(json.dumps(bias.to_dict()))
    (folder / "knowing_doing_planted.json").write_text(json.dumps(gap.to_dict()))
    paths = write_report([folder], tmp_path / "out")
    markdown = paths.markdown.read_text(encoding="utf-8")
    buckets = {r[3]: r for r in _table_rows(_section(markdown, "### Argmax class per"))}
    expected = bias.to_dict()["buckets"]["90-100"]
    assert buckets["90-100"][4:6] == [str(expected["n"]), f"{expected['frequent']:.2f}"]
    assert buckets["90-100"][6:8] == [
        f"{expected['frequent_and_greedy']:.2f}",
        f"{expected['tie']:.2f}",
    ]
    assert "written before the tie" not in markdown
    (summary,) = _table_rows(_section(markdown, "## Knowing-doing gap"))
    assert summary[3:5] == ["10", f"{100 * gap.knowing_rate:.1f}%"]
    assert summary[-1] == "random"
    cells = _table_rows(_section(markdown, "### planted: "))
    table = gap.table()
    assert cells[0][1:4] == [f"{table['correct'][c]:.1f}%" for c in ("optimal", "greedy", "other")]
    names = {path.stem for path in paths.plots}
    assert {"frequency_bias_entropy", "frequency_bias_buckets"} <= names
    assert any(name.startswith("knowing_doing_planted") for name in names)


def test_undefined_probe_numbers_show_as_na(tmp_path: Path) -> None:
    folder = _probe_dir(tmp_path / "probes")
    data = json.loads((folder / "knowing_doing_ucb2.json").read_text())
    data.update(
        n=0,
        knowing_rate=None,
        table={
            row: dict.fromkeys(("optimal", "greedy", "other")) for row in ("correct", "incorrect")
        },
    )
    (folder / "knowing_doing_ucb2.json").write_text(json.dumps(data))
    paths = write_report([folder], tmp_path / "out")
    (summary,) = _table_rows(_section(paths.markdown.read_text(), "## Knowing-doing gap"))
    assert summary[3:5] == ["0", "n/a"]


def test_a_frequency_result_from_before_the_tie_cases_is_marked_in_the_report(report) -> None:
    _, paths = report
    section = _section(paths.markdown.read_text(encoding="utf-8"), "### Argmax class per")
    assert "probes: written before the tie and frequent_and_greedy cases existed" in section
    header = next(line for line in section.splitlines() if line.startswith("| source"))
    assert "frequent and greedy" in header and "tie" in header
    rows = {r[3]: r for r in _table_rows(section)}
    assert rows["90-100"][5:8] == ["0.90", "n/a", "n/a"]  # frequent; the cases it lacks
