"""The report's sources: run directories (episode records) and probe results, read and checked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentbench.analysis.frequency_bias import CLASSES as FREQUENCY_CLASSES
from agentbench.analysis.knowing_doing import DOING_CLASSES
from agentbench.errors import ConfigError
from agentbench.io import read_json
from agentbench.records import Episode, read_episodes
from agentbench.suite import CONFIG_FILE, EPISODES_FILE, agent_label

# The probe results' table keys, as the probes write them.
BIAS_CLASSES = FREQUENCY_CLASSES  # frequency-bias argmax classes
KNOWING_ROWS = ("correct", "incorrect")  # knowing-doing rows; columns: DOING_CLASSES
FREQUENCY_BIAS_GLOB = "frequency_bias*.json"
KNOWING_DOING_GLOB = "knowing_doing*.json"
DECISION_AT_K_GLOB = "decision_at_k*.json"


@dataclass
class ProbeResult:
    """One probe result file of a source."""

    source: str
    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        """How plots and tables name the result: run, model and (when it matters) env."""
        return f"{self.source}: {self.data['model']}"


@dataclass
class Source:
    """One directory given to the report: a run, probe results, or both."""

    label: str
    path: Path
    episodes: list[Episode] | None = None
    agent_order: list[str] = field(default_factory=list)
    frequency_bias: list[ProbeResult] = field(default_factory=list)
    knowing_doing: list[ProbeResult] = field(default_factory=list)
    decision_at_k: list[ProbeResult] = field(default_factory=list)


def load_sources(paths: Sequence[str | Path]) -> list[Source]:
    """Read every source, labelled by directory name (with its parent where names repeat)."""
    paths = [Path(path) for path in paths]
    if not paths:
        raise ConfigError("a report needs at least one source: a run or analysis directory")
    labels = _source_labels(paths)
    return [_load_source(path, label) for path, label in zip(paths, labels, strict=True)]


def _source_labels(paths: Sequence[Path]) -> list[str]:
    names = [path.resolve().name or str(path) for path in paths]
    labels = []
    for path, name in zip(paths, names, strict=True):
        if names.count(name) > 1:
            parts = path.resolve().parts
            name = "/".join(parts[-2:])
        while name in labels:
            name += "'"
        labels.append(name)
    return labels


def _load_source(path: Path, label: str) -> Source:
    if not path.exists():
        raise ConfigError(
            f"report source {path} does not exist: give a run directory (with "
            f"{EPISODES_FILE}) or an analysis directory with probe results"
        )
    if not path.is_dir():
        raise ConfigError(
            f"report source {path} is not a directory: give a run directory (with "
            f"{EPISODES_FILE}) or an analysis directory with probe results"
        )
    source = Source(label, path)
    episodes_path = path / EPISODES_FILE
    if episodes_path.is_file():
        source.episodes = _read_run(episodes_path)
        source.agent_order = _agent_order(path / CONFIG_FILE)
    source.frequency_bias = [
        ProbeResult(label, file, _read_probe(file, "frequency_bias"))
        for file in sorted(path.glob(FREQUENCY_BIAS_GLOB))
    ]
    source.knowing_doing = [
        ProbeResult(label, file, _read_probe(file, "knowing_doing"))
        for file in sorted(path.glob(KNOWING_DOING_GLOB))
    ]
    source.decision_at_k = [
        ProbeResult(label, file, _read_probe(file, "decision_at_k"))
        for file in sorted(path.glob(DECISION_AT_K_GLOB))
    ]
    probes = source.frequency_bias or source.knowing_doing or source.decision_at_k
    if source.episodes is None and not probes:
        raise ConfigError(
            f"report source {path} holds neither {EPISODES_FILE} nor probe results "
            f"({FREQUENCY_BIAS_GLOB}, {KNOWING_DOING_GLOB}, {DECISION_AT_K_GLOB})"
        )
    return source


def _read_run(path: Path) -> list[Episode]:
    try:
        episodes = read_episodes(path)
    except (TypeError, KeyError, AttributeError) as error:  # a line with the wrong fields
        raise ConfigError(f"{path} holds a line that is not an episode record ({error})") from None
    if not episodes:
        raise ConfigError(f"{path} holds no episodes: expected one episode record per line")
    return episodes


def _agent_order(config_path: Path) -> list[str]:
    """The suite's agent labels, so report columns follow the suite like summary.md does."""
    try:
        config = read_json(config_path, "run config")
        return [agent_label(spec) for spec in config["suite"]["agents"]]
    except (ConfigError, KeyError, TypeError):
        return []  # no or an older config: the order of the records is as good


_PROBE_KEYS = {
    "frequency_bias": ("model", "env_id", "points", "buckets", "correlation"),
    "knowing_doing": ("model", "env_id", "table", "knowing_rate", "unparsed", "invalid_actions"),
    "decision_at_k": ("model", "env_id", "n_samples", "valid_share", "metrics"),
}


def _read_probe(path: Path, probe: str) -> dict[str, Any]:
    """A probe result, checked against the schema the report reads."""
    expected = f"a {probe} probe result (JSON object with {', '.join(_PROBE_KEYS[probe])})"
    try:
        data = read_json(path, "probe result")
    except ConfigError as error:
        raise ConfigError(f"{error}: expected {expected}") from None
    if not isinstance(data, dict) or any(key not in data for key in _PROBE_KEYS[probe]):
        raise ConfigError(f"{path} is malformed: expected {expected}")
    if data.get("probe", probe) != probe:
        raise ConfigError(f"{path} holds a {data['probe']!r} result: expected {expected}")
    # The numbers the report reads, as floats; null (undefined: an empty bucket, no records)
    # becomes NaN, which the tables show as n/a and the plots leave out.
    try:
        if probe == "frequency_bias":
            for point in data["points"]:
                point["repetitions"] = float(point["repetitions"])
                point["entropy"] = _float_or_nan(point["entropy"])
            for bucket in data["buckets"].values():
                for name in (*BIAS_CLASSES, "mean_entropy"):
                    bucket[name] = _float_or_nan(bucket.get(name))
            data["correlation"] = dict(data["correlation"])
        elif probe == "decision_at_k":
            data["valid_share"] = _float_or_nan(data["valid_share"])
            for row in data["metrics"].values():
                for k, value in row.items():
                    row[k] = None if value is None else dict(value)
        else:
            for row in KNOWING_ROWS:
                for column in DOING_CLASSES:
                    data["table"][row][column] = _float_or_nan(data["table"][row][column])
            data["knowing_rate"] = _float_or_nan(data["knowing_rate"])
    except (TypeError, KeyError, ValueError, AttributeError):
        raise ConfigError(f"{path} is malformed: expected {expected}") from None
    return data


def _float_or_nan(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)
