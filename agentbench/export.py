"""Runs as flat tables: one row per step and one row per episode, as CSV or JSONL.

``agentbench export RUN...`` writes ``steps.csv`` and ``episodes.csv`` (or
``steps.jsonl`` and ``episodes.jsonl``) that pandas and spreadsheets load as they
are: every cell is a scalar, nested values (settings, observations, shown labels)
are JSON strings, and a missing value is an empty cell in CSV and ``null`` in
JSONL (never NaN; an empty ``state`` or ``text`` is missing too), so both formats
load to the same table.

Several runs go into the same two tables; the ``run`` column holds each RUN as it
was given on the command line (unlike a directory name, it tells apart two runs
whose directories share a name). The per-step and per-episode values come from
:mod:`agentbench.metrics`, which also decides what applies to an episode, from its
records: regret columns when every step records a regret, bandit columns
(coverage, greedy fraction, suffix failure, K * MinFrac) when every step records
an optimal action; elsewhere they are empty.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentbench import metrics
from agentbench.errors import ConfigError
from agentbench.io import json_number, write_atomic
from agentbench.records import Episode, Step, to_jsonable

FORMATS = ("csv", "jsonl")
STEPS_TABLE = "steps"
EPISODES_TABLE = "episodes"
STATUSES = ("valid", "forced", "invalid")  # they partition every episode's steps

# Columns that say whose row it is, first in both tables.
EPISODE_KEY_COLUMNS = ("run", "agent", "agent_settings", "env", "env_id", "env_kwargs",
                       "family", "seed")  # fmt: skip
STEP_COLUMNS = (
    *EPISODE_KEY_COLUMNS,
    "step",
    "action",
    "label",
    "proposed",
    "reward",
    "cumulative_reward",
    "expected_reward",
    "optimal_action",
    "regret",
    "cumulative_regret",
    "coverage",
    "status",
    "valid",
    "forced",
    "illegal",
    "forced_probability",
    "mechanism",
    "shown_labels",
    "state",
    "observation",
    "text",
)
EPISODE_COLUMNS = (
    *EPISODE_KEY_COLUMNS,
    "n_actions",
    "steps",
    "total_reward",
    "final_regret",
    "coverage",
    "greedy_fraction",
    "suffix_failure",
    "k_minfrac",
    "invalid_share",
    "forced_share",
    "illegal_share",
    "outcome",
)


@dataclass(frozen=True)
class Exported:
    """Where :func:`export_runs` wrote the two tables, and their row counts."""

    steps: Path
    episodes: Path
    n_steps: int
    n_episodes: int


def step_status(step: Step) -> str:
    """``forced`` (answer forcing chose the action), ``valid`` (the answer named a legal
    action) or ``invalid`` (it named none and the random fallback played), as
    :func:`metrics.episode_forced_share` and :func:`metrics.episode_invalid_share` count."""
    if step.forced:
        return "forced"
    return "valid" if step.valid else "invalid"


def _cell(value: Any) -> Any:
    """A scalar cell: numpy as Python, NaN and infinities and empty text as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return json_number(value)
    return None if value == "" else value


def _json_cell(value: Any) -> str | None:
    """A nested value as a JSON string cell (None stays missing)."""
    return None if value is None else json.dumps(to_jsonable(value), allow_nan=False)


def _key_cells(run: str, episode: Episode) -> dict[str, Any]:
    return {
        "run": run,
        "agent": episode.agent,
        "agent_settings": _json_cell(episode.agent_settings),
        "env": episode.env_name,
        "env_id": episode.env_id,
        "env_kwargs": _json_cell(episode.env_kwargs),
        "family": _cell(episode.family),
        "seed": episode.seed,
    }


def step_rows(run: str, episode: Episode) -> list[dict[str, Any]]:
    """One row per step of ``episode`` (:data:`STEP_COLUMNS`)."""
    missing = [None] * len(episode.steps)
    bandit, regret = metrics.is_bandit([episode]), metrics.records_regret([episode])
    cumulative_regret = metrics.episode_cumulative_regret(episode) if regret else missing
    coverage = metrics.episode_coverage(episode) if bandit else missing
    cumulative_reward = metrics.episode_cumulative_return(episode)
    key = _key_cells(run, episode)
    rows = []
    for index, step in enumerate(episode.steps):
        values = {
            "step": step.t,
            "action": step.action,
            "label": step.label,
            "proposed": step.proposed,
            "reward": step.reward,
            "cumulative_reward": cumulative_reward[index],
            "expected_reward": step.expected_reward,
            "optimal_action": step.optimal_action,
            "regret": step.regret,
            "cumulative_regret": cumulative_regret[index],
            "coverage": coverage[index],
            "status": step_status(step),
            "valid": step.valid,
            "forced": step.forced,
            "illegal": step.illegal,
            "forced_probability": step.forced_probability,
            "mechanism": step.mechanism,
            "shown_labels": _json_cell(step.shown_labels),
            "state": step.state,
            "observation": _json_cell(step.observation),
            "text": step.text,
        }
        rows.append(key | {name: _cell(value) for name, value in values.items()})
    return rows


def episode_row(run: str, episode: Episode) -> dict[str, Any]:
    """One row of per-episode values (:data:`EPISODE_COLUMNS`); a metric that does not
    apply to the episode (regret off bandits, outcome off tic-tac-toe) is None."""
    bandit, regret = metrics.is_bandit([episode]), metrics.records_regret([episode])
    values = {
        "n_actions": episode.n_actions,
        "steps": len(episode.steps),
        "total_reward": episode.total_reward,
        "final_regret": metrics.episode_cumulative_regret(episode)[-1] if regret else None,
        "coverage": metrics.episode_coverage(episode)[-1] if bandit else None,
        "greedy_fraction": metrics.episode_greedy_fraction(episode) if bandit else None,
        "suffix_failure": metrics.episode_suffix_failure(episode) if bandit else None,
        "k_minfrac": metrics.episode_k_minfrac(episode) if bandit else None,
        "invalid_share": metrics.episode_invalid_share(episode),
        "forced_share": metrics.episode_forced_share(episode),
        # metrics has no per-episode illegal share; the rate over one episode is its share
        "illegal_share": metrics.illegal_rate([episode]).mean,
        "outcome": episode.outcome,
    }
    return _key_cells(run, episode) | {name: _cell(value) for name, value in values.items()}


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # None is written as an empty cell
    return buffer.getvalue()


def _jsonl_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = [json.dumps({name: row[name] for name in columns}, allow_nan=False) for row in rows]
    return "".join(line + "\n" for line in lines)


_WRITERS = {"csv": _csv_text, "jsonl": _jsonl_text}


def export_runs(runs: Mapping[str, Sequence[Episode]], out: Path, file_format: str) -> Exported:
    """Write the step and episode tables of ``runs`` (RUN as given -> its episodes) into
    the existing directory ``out`` as ``steps.FORMAT`` and ``episodes.FORMAT``, each
    written atomically (replacing an earlier export there)."""
    if file_format not in _WRITERS:
        raise ConfigError(f"unknown export format {file_format!r}: choose one of {FORMATS}")
    empty = [run for run, episodes in runs.items() if not episodes]
    if empty:
        raise ConfigError(f"{empty[0]} holds no episodes: nothing to export")
    steps = [row for run, eps in runs.items() for ep in eps for row in step_rows(run, ep)]
    episodes = [episode_row(run, ep) for run, eps in runs.items() for ep in eps]
    write = _WRITERS[file_format]
    steps_path = write_atomic(out / f"{STEPS_TABLE}.{file_format}", write(steps, STEP_COLUMNS))
    episodes_path = write_atomic(
        out / f"{EPISODES_TABLE}.{file_format}", write(episodes, EPISODE_COLUMNS)
    )
    return Exported(steps_path, episodes_path, len(steps), len(episodes))
