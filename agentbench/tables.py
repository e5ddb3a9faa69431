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
    invalid = (row.get("invalid_rate") or {}).get("mean")
    if invalid:
        text += f" [invalid {100 * invalid:.0f}%]"
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
    return tables
