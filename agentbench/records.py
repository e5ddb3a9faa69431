"""Step and Episode records, and their JSONL files (one line per episode).

Everything downstream of the rollout (metrics, reports, analysers, SFT data)
reads these records, never a live model or env, so a run can be analysed again
later. Files are append-only and flushed per episode: a run killed at any
moment leaves every finished episode on disk and at most one partial last
line, which :func:`read_episodes` drops.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agentbench.errors import ConfigError


@dataclass
class Step:
    """One transition of an episode, as the agent took it."""

    t: int  # 1-based step index
    action: int  # the action the env executed
    label: str  # its label
    reward: float  # the env's reward
    valid: bool = True  # False: the agent's answer was unparseable or not a legal action
    illegal: bool = False  # the env judged the move illegal (tic-tac-toe)
    proposed: int | None = None  # what the agent answered (None: nothing parseable)
    shaping: float = 0.0  # training-only shaping reward (invalid penalty), kept apart
    expected_reward: float | None = None  # bandits: mean of the executed arm
    optimal_action: int | None = None  # bandits: best arm for this step
    regret: float | None = None  # bandits: expected regret of this step
    state: str = ""  # the env's state text before the move
    observation: Any = None  # the observation the agent acted on (JSON-able)
    text: str = ""  # generated text (LLM agents)


@dataclass
class Episode:
    """One episode of one agent on one env with one seed."""

    agent: str
    env_id: str
    seed: int
    n_actions: int
    action_labels: list[str]
    steps: list[Step] = field(default_factory=list)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    outcome: str | None = None  # tic-tac-toe: win / draw / loss

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity of an episode within a run: resuming skips keys already on disk."""
        return (self.agent, self.env_id, self.seed)

    @property
    def total_reward(self) -> float:
        return float(sum(step.reward for step in self.steps))

    def to_json(self) -> str:
        data = asdict(self)
        data["steps"] = [_compact_step(step) for step in data["steps"]]
        return json.dumps(data, default=_jsonable, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        data = dict(data)
        data["steps"] = [Step(**step) for step in data.get("steps", [])]
        return cls(**data)


_STEP_DEFAULTS = {
    name: f.default for name, f in Step.__dataclass_fields__.items() if f.default is not MISSING
}


def _compact_step(step: dict[str, Any]) -> dict[str, Any]:
    """A step without the fields that hold their default (a full grid run is ~3x smaller)."""
    return {
        key: value
        for key, value in step.items()
        if key not in _STEP_DEFAULTS
        or value != _STEP_DEFAULTS[key]
        or type(value) is not type(_STEP_DEFAULTS[key])
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to an episode record")


def to_jsonable(value: Any) -> Any:
    """Numpy scalars and arrays (possibly nested in lists/dicts) as plain JSON types."""
    return json.loads(json.dumps(value, default=_jsonable))


class EpisodeWriter:
    """Appends episodes to a JSONL file, flushing after each one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_last_line(self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, episode: Episode) -> None:
        self._file.write(episode.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_partial_last_line(path: Path) -> None:
    """Cut a line left unfinished by a killed writer, so appends start clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as handle:
        handle.truncate(keep)


def read_episodes(path: str | Path) -> list[Episode]:
    """All complete episodes in a JSONL file; a partial last line is dropped with a warning."""
    return list(iter_episodes(path))


def iter_episodes(path: str | Path) -> Iterator[Episode]:
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # unfinished last line of an interrupted run
                warnings.warn(f"{path}: dropped a partial last line", stacklevel=2)
                return
            raise ConfigError(f"{path}:{number} is not a valid episode record") from None
        yield Episode.from_dict(data)


def write_episodes(path: str | Path, episodes: Iterable[Episode]) -> None:
    """Write (append) several episodes."""
    with EpisodeWriter(path) as writer:
        for episode in episodes:
            writer.write(episode)
