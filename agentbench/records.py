"""Step and Episode records, and their JSONL files (one line per episode).

Everything downstream of the rollout (metrics, reports, analysers, SFT data)
reads these records, never a live model or env, so a run can be analysed again
later. Files are append-only and flushed per episode: a run killed at any
moment leaves every finished episode on disk and at most one partial last
line, which :func:`read_episodes` drops (a whole record that only lacks its
newline is kept). Reading counts each (agent, env, seed) once.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, field
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
    valid: bool = True  # False: the answer named no legal action (forced, or the fallback played)
    illegal: bool = False  # the env judged the move illegal (tic-tac-toe)
    proposed: int | None = None  # what the agent answered (None: nothing parseable)
    expected_reward: float | None = None  # bandits: mean of the executed arm
    optimal_action: int | None = None  # bandits: best arm for this step
    regret: float | None = None  # bandits: expected regret of this step
    state: str = ""  # the env's state text before the move
    observation: Any = None  # the observation the agent acted on (JSON-able)
    text: str = ""  # generated text (LLM agents)
    # answer forcing (LLM agents): the action is the legal label the model scored most
    # likely (or sampled) after its answer named none; valid is False, proposed is what
    # the answer named, and forced_probability the chosen label's probability
    forced: bool = False
    forced_probability: float | None = None
    # LLM agents: what it takes to rebuild the step's prompt (agent.prompts): the labels
    # shown this step when randomise_labels shuffled them, and the exploration mechanism
    # that answered from a template instead of the model ("try-all", "epsilon")
    shown_labels: list[str] | None = None
    mechanism: str | None = None


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
    # what the agent ran with, every default filled in (agent.interface.resolved_settings);
    # empty in records written before agentbench recorded it
    agent_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def env_name(self) -> str:
        """The env id, with the settings it was made with (:func:`env_label`)."""
        return env_label(self.env_id, self.env_kwargs)

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity of an episode within a run: resuming skips keys already on disk."""
        return (self.agent, self.env_name, self.seed)

    @property
    def total_reward(self) -> float:
        return float(sum(step.reward for step in self.steps))

    def to_json(self) -> str:
        # By hand rather than dataclasses.asdict, whose deep copy of every step was most
        # of the cost of writing a record; the JSON is the same.
        data = {name: getattr(self, name) for name in _EPISODE_FIELDS}
        data["steps"] = [_compact_step(step) for step in self.steps]
        return json.dumps(data, default=_jsonable, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        data = dict(data)
        data["steps"] = [Step(**_current_step(step)) for step in data.get("steps", [])]
        return cls(**data)


def env_label(env_id: str, kwargs: dict[str, Any] | None = None) -> str:
    """The name an env's episodes are grouped under: its id, plus any settings it was made
    with, as agent labels are (``agentbench/TicTacToe-random-v0(agent_side=O)``)."""
    if not kwargs:
        return env_id
    return f"{env_id}({','.join(f'{key}={value}' for key, value in kwargs.items())})"


# Step fields that older records hold and this version no longer writes. ``shaping``:
# the -5 invalid-answer penalty was written on every invalid step whatever penalty a
# trainer applied, and no trainer read it; trainers shape rewards from ``valid``.
_RETIRED_STEP_FIELDS = frozenset({"shaping"})


def _current_step(step: dict[str, Any]) -> dict[str, Any]:
    if _RETIRED_STEP_FIELDS.isdisjoint(step):
        return step
    return {key: value for key, value in step.items() if key not in _RETIRED_STEP_FIELDS}


# (name, default) of every Step field in order; _NO_DEFAULT for the fields always written.
_NO_DEFAULT = object()
_STEP_DEFAULTS = tuple(
    (name, _NO_DEFAULT if f.default is MISSING else f.default)
    for name, f in Step.__dataclass_fields__.items()
)


def _compact_step(step: Step) -> dict[str, Any]:
    """A step without the fields that hold their default (a full grid run is ~3x smaller).

    A value equal to the default but of another type (``reward=0`` for ``0.0``) is kept.
    """
    fields = step.__dict__
    return {
        name: fields[name]
        for name, default in _STEP_DEFAULTS
        if default is _NO_DEFAULT
        or type(fields[name]) is not type(default)
        or fields[name] != default
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to an episode record")


_JSON_SCALARS = (int, float, str, bool, type(None))


def to_jsonable(value: Any) -> Any:
    """Numpy scalars and arrays (possibly nested in lists/dicts) as plain JSON types."""
    # What the JSON round trip below would return, without it, for the common cases.
    if type(value) in _JSON_SCALARS:
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value.tolist()
    return json.loads(json.dumps(value, default=_jsonable))


class EpisodeWriter:
    """Appends episodes to a JSONL file, flushing after each one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _repair_last_line(self.path)
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


def _is_complete_record(line: bytes) -> bool:
    """A line a killed writer may have left without its newline: whole if it parses.

    A record is one JSON object, so a cut one never parses (its closing brace is missing).
    """
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def _repair_last_line(path: Path) -> None:
    """Make the file end with a newline before appending, as a reader sees it.

    A last line cut by a killed writer is removed; a whole record that only lacks its
    newline gets one (cutting it would lose that episode: the reader counted it).
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    if _is_complete_record(data[keep:]):
        with path.open("ab") as handle:
            handle.write(b"\n")
        return
    with path.open("r+b") as handle:
        handle.truncate(keep)


def read_episodes(path: str | Path) -> list[Episode]:
    """All complete episodes in a JSONL file, each (agent, env, seed) once.

    See :func:`iter_episodes` for what is dropped with a warning and what is an error.
    """
    return list(iter_episodes(path))


def _required(fields: dict[str, Any]) -> list[str]:
    return [name for name, f in fields.items()
            if f.default is MISSING and f.default_factory is MISSING]  # fmt: skip


_EPISODE_FIELDS = Episode.__dataclass_fields__
_STEP_FIELDS = Step.__dataclass_fields__
_KEY_TYPES = {"agent": str, "env_id": str, "seed": int}


def iter_episodes(path: str | Path) -> Iterator[Episode]:
    """The episodes of a JSONL file in file order, each (agent, env, seed) once.

    - A last line without its newline that is not whole JSON is what a killed writer
      leaves: it is dropped with a warning (a whole record without its newline counts).
    - A later record with the key of an earlier one (two writers, or a file appended to
      twice) is skipped; one warning at the end says how many were skipped.
    - Any other line that is not a JSON object with the fields of :class:`Episode` (and
      of :class:`Step` in ``steps``) raises :class:`ConfigError` naming the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as error:
        raise ConfigError(f"cannot read episodes file {path}: {error.strerror}") from None
    seen: set[tuple[str, str, int]] = set()
    duplicates = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines) and not _is_complete_record(line):
            warnings.warn(f"{path}: dropped a partial last line", stacklevel=2)
            break
        episode = _episode_from_line(line, f"{path}:{number}")
        if episode.key in seen:
            duplicates += 1
            continue
        seen.add(episode.key)
        yield episode
    if duplicates:
        warnings.warn(
            f"{path}: skipped {duplicates} duplicate episode records (an agent, env and seed "
            f"already read); kept the first of each",
            stacklevel=2,
        )


def _episode_from_line(line: bytes, where: str) -> Episode:
    """One record, or a ConfigError that says at ``where`` (file:line) what is wrong."""
    try:
        data = json.loads(line)
    except ValueError:
        raise ConfigError(f"{where} is not an episode record: not a line of JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where} is not an episode record: expected a JSON object, got {type(data).__name__}"
        )
    problem = _field_problem(data, _EPISODE_FIELDS)
    if problem is None:
        wrong = [k for k, kind in _KEY_TYPES.items()
                 if not isinstance(data[k], kind) or isinstance(data[k], bool)]  # fmt: skip
        if wrong:
            problem = f"{wrong[0]} must be {_KEY_TYPES[wrong[0]].__name__}, got {data[wrong[0]]!r}"
    steps = data.get("steps", [])
    if problem is None and not isinstance(steps, list):
        problem = f"steps must be a list, got {type(steps).__name__}"
    for index, step in enumerate(steps if problem is None else []):
        if not isinstance(step, dict):
            problem = f"step {index} is not a JSON object"
            break
        problem = _field_problem(_current_step(step), _STEP_FIELDS)
        if problem is not None:
            problem = f"step {index}: {problem}"
            break
    if problem is not None:
        raise ConfigError(f"{where} is not an episode record: {problem}")
    return Episode.from_dict(data)


def _field_problem(data: dict[str, Any], fields: dict[str, Any]) -> str | None:
    unknown = sorted(set(data) - set(fields))
    if unknown:
        return f"unknown field {unknown[0]!r}"
    missing = [name for name in _required(fields) if name not in data]
    if missing:
        return f"missing field {missing[0]!r}"
    return None


def write_episodes(path: str | Path, episodes: Iterable[Episode]) -> None:
    """Write (append) several episodes."""
    with EpisodeWriter(path) as writer:
        for episode in episodes:
            writer.write(episode)
