"""Comparison tables of a run's metrics: one table per env family, agents as columns.

The rows come from :func:`agentbench.metrics.summarize_run`; the CLI prints
the tables with rich and the run's ``summary.md`` holds them as Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentbench.envs import BANDIT_FAMILY, CONTEXTUAL_FAMILY, TICTACTOE_FAMILY

# family -> (title, metric shown, how to read it)
_FAMILY_TABLES = {
    BANDIT_FAMILY: (
        "Multi-armed bandits: cumulative expected regret",
        "final_regret",
        "lower is better",
    ),
    CONTEXTUAL_FAMILY: (
        "Contextual bandits: cumulative expected regret",
        "final_regret",
        "lower is better",
    ),
    TICTACTOE_FAMILY: (
        "Tic-tac-toe: mean return (win / draw / loss %)",
        "return",
        "higher is better",
    ),
}


def estimate_text(estimate: dict[str, Any] | None, digits: int = 2) -> str:
    if not estimate or estimate.get("mean") is None:
        return "n/a"
    mean, low, high = estimate["mean"], estimate.get("low"), estimate.get("high")
    if low is None or high is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _cell(row: dict[str, Any], metric: str) -> str:
    text = estimate_text(row.get(metric))
    if "win_rate" in row:
        rates = [round(100 * (row[f"{o}_rate"]["mean"] or 0)) for o in ("win", "draw", "loss")]
        text += " ({} / {} / {})".format(*rates)
    notes = [
        f"{what} {100 * rate:.0f}%"
        for what in ("invalid", "forced")
        if (rate := _mean(row, f"{what}_rate"))
    ]
    if notes:
        text += f" [{', '.join(notes)}]"
    return text


def comparison_tables(
    metrics: Sequence[dict[str, Any]], agent_order: Sequence[str] = ()
) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per family present, envs as rows and agents as columns.

    Columns follow ``agent_order`` (e.g. the suite's), then any other agent.
    """
    agents: list[str] = list(agent_order)
    for row in metrics:
        if row["agent"] not in agents:
            agents.append(row["agent"])
    tables = []
    families = list(_FAMILY_TABLES) + sorted({r["family"] for r in metrics} - set(_FAMILY_TABLES))
    for family in families:
        rows = [r for r in metrics if r["family"] == family]
        if not rows:
            continue
        title, metric, reading = _FAMILY_TABLES.get(
            family, (f"{family}: mean return", "return", "higher is better")
        )
        by_pair = {(r["env_id"], r["agent"]): r for r in rows}
        env_ids = list(dict.fromkeys(r["env_id"] for r in rows))
        columns = [a for a in agents if any((e, a) in by_pair for e in env_ids)]
        header = ["env", *columns]
        body = [
            [env_id.removeprefix("agentbench/"),
             *(_cell(by_pair[(env_id, a)], metric) if (env_id, a) in by_pair else "-"
               for a in columns)]
            for env_id in env_ids
        ]  # fmt: skip
        tables.append((f"{title} ({reading}; mean ± 95% CI half-width)", header, body))
        if family == BANDIT_FAMILY:
            tables.append(_decision_profile(by_pair, env_ids, columns))
    return tables


def _decision_profile(
    by_pair: dict[tuple[str, str], dict[str, Any]], env_ids: list[str], agents: list[str]
) -> tuple[str, list[str], list[list[str]]]:
    """How each agent decided on the multi-armed bandits: the exploration metrics and
    the shares of valid, forced and invalid answers (an LLM's own choices show only
    where its answers are valid or forced)."""
    header = ["env", "agent", *(m.replace("_", " ") for m in _PROFILE), "valid / forced / invalid"]
    body = []
    for env_id in env_ids:
        for agent in agents:
            row = by_pair.get((env_id, agent))
            if row is None:
                continue
            invalid, forced = (_mean(row, m) or 0.0 for m in ("invalid_rate", "forced_rate"))
            answers = [1.0 - invalid - forced, forced, invalid]
            body.append([
                env_id.removeprefix("agentbench/"),
                agent,
                *(estimate_text(row.get(metric)) for metric in _PROFILE),
                " / ".join(f"{100 * share:.0f}%" for share in answers),
            ])  # fmt: skip
    title = (
        "Multi-armed bandits: decision profile (coverage: share of arms tried, higher explores "
        "more; greedy fraction: share of steps on the best-looking arm; suffix failure: share "
        "of episodes that never pulled the best arm in their second half)"
    )
    return title, header, body


_PROFILE = ("coverage", "greedy_fraction", "suffix_failure")


def _mean(row: dict[str, Any], metric: str) -> float | None:
    return (row.get(metric) or {}).get("mean")
