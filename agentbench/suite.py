"""Named suites (env ids x seeds x agents) and the runner that plays them.

A suite is a TOML file (see ``agentbench/suites/*.toml``; copy one to make
your own). The runner writes a run directory:

    config.json     the resolved suite, agents, seeds and package versions
    episodes.jsonl  one line per finished episode, appended and flushed
    metrics.json    per (agent, env) metrics with 95% confidence intervals
    summary.md      the comparison tables

Running again into the same directory resumes: episodes already on disk are
skipped and only the missing seeds are played, so an interrupted run loses
nothing and duplicates nothing. A run holds an exclusive lock on ``run.lock``
in the directory while it plays (released when the process ends, crash or
kill included), so a second run into the same directory fails at once instead
of writing every episode twice.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import platform
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from agentbench.agent.interface import Agent
from agentbench.envs import get_preset, list_envs, make
from agentbench.errors import AgentbenchError, ConfigError
from agentbench.io import named_toml, package_tomls, read_json, read_toml, write_atomic, write_json
from agentbench.models.interface import GenerationError
from agentbench.records import Episode, EpisodeWriter, env_label, read_episodes, to_jsonable
from agentbench.rollout import rollout
from agentbench.settings import config_from_dict, setting

SUITE_DIR = "suites"
CONFIG_FILE = "config.json"
EPISODES_FILE = "episodes.jsonl"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.md"
LOCK_FILE = "run.lock"


@dataclass
class SuiteEnv:
    """One env of a suite: a registered id and the settings (keyword arguments) it is made
    with; episodes are grouped under :attr:`name`, the id with those settings."""

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return env_label(self.id, to_jsonable(self.kwargs))

    def validate(self) -> None:
        """ConfigError for an unknown id, or settings the env does not take."""
        get_preset(self.id)
        if not isinstance(self.kwargs, dict):
            raise ConfigError(f"env {self.id}: kwargs must be a table, got {self.kwargs!r}")
        if not self.kwargs:
            return
        make(self.id, **self.kwargs).close()  # one line naming a setting the env lacks


@dataclass
class Suite:
    """What to run: envs (ids with their settings), agents, and the seeds of the episodes."""

    name: str
    envs: list[SuiteEnv]
    agents: list[dict[str, Any]]  # each {"name": ..., **agent kwargs}
    episodes: int = 64  # episodes per (agent, env); seeds seed .. seed + episodes - 1
    seed: int = 0
    num_envs: int = 64  # envs played at once (the published setup uses 64)
    description: str = ""

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))

    @property
    def env_ids(self) -> list[str]:
        """The registered ids of the suite's envs (an id twice when it has two settings)."""
        return [env.id for env in self.envs]

    def validate(self) -> Suite:
        for name, minimum in (("episodes", 1), ("seed", 0), ("num_envs", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name} must be an integer of at least {minimum}, got {value!r}")
        if not self.envs:
            raise ConfigError(f"suite {self.name!r} selects no envs")
        if not self.agents:
            raise ConfigError(f"suite {self.name!r} names no agents")
        names = [env.name for env in self.envs]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ConfigError(f"suite {self.name!r} lists {', '.join(twice)} more than once")
        for env in self.envs:
            env.validate()
        return self


def builtin_suites() -> dict[str, Path]:
    """Built-in suite names and their TOML files."""
    return package_tomls(SUITE_DIR)


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name ('default', 'full', ...) or a suite TOML file by path."""
    path = named_toml(name_or_path, builtin_suites(), "suite")
    return suite_from_dict(read_toml(path, "suite file"), default_name=path.stem)


@dataclass
class SuiteFile:
    """The keys of a suite TOML file, each with its help (``agentbench run --help``)."""

    name: str | None = setting(None, "the suite's name in reports (default: the file's stem)")
    description: str = setting("", "one line saying what the suite is for")
    episodes: int = setting(64, "episodes per (agent, env): seeds seed .. seed + episodes - 1")
    seed: int = setting(0, "the first episode seed")
    num_envs: int = setting(64, "envs played at once (the published setup uses 64)")
    agents: list[Any] = setting(
        factory=list,
        help='agent names or tables, e.g. "ucb" or { name = "llm", model = "...", budget = 64 }',
    )
    envs: list[Any] = setting(
        factory=list,
        help=(
            'env ids or tables: { id = "..." } or { pattern = "agentbench/*-v0" }, either with '
            'kwargs = { ... }, the env\'s settings (e.g. { agent_side = "O" } or '
            "{ horizon = 100 }); one id may appear with several settings"
        ),
    )


def suite_from_dict(data: dict[str, Any], default_name: str = "custom") -> Suite:
    """A validated Suite from a suite file's table (:class:`SuiteFile` keys)."""
    keys = config_from_dict(SuiteFile, data, "suite")  # unknown keys, wrong types
    envs: list[SuiteEnv] = []
    for entry in keys.envs:
        for env in _select_envs(entry):
            if env.name not in [known.name for known in envs]:
                envs.append(env)
    agents = [_agent_spec(entry) for entry in keys.agents]
    suite = Suite(
        name=keys.name or default_name,
        description=keys.description,
        envs=envs,
        agents=agents,
        episodes=keys.episodes,
        seed=keys.seed,
        num_envs=keys.num_envs,
    )
    return suite.validate()


ENV_ENTRY_KEYS = ("id", "pattern", "kwargs")


def _select_envs(entry: dict[str, Any] | str) -> list[SuiteEnv]:
    if isinstance(entry, str):
        entry = {"id": entry}
    if not isinstance(entry, dict):
        raise ConfigError(
            f"an envs entry must be an env id or a table with 'id' or 'pattern', got {entry!r}"
        )
    unknown = [key for key in entry if key not in ENV_ENTRY_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in envs entry {entry!r}; accepted are "
            f"{', '.join(ENV_ENTRY_KEYS)}"
        )
    for key in ("id", "pattern"):
        if key in entry and not isinstance(entry[key], str):
            raise ConfigError(f"an envs entry's {key!r} must be a string, got {entry[key]!r}")
    kwargs = entry.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(f"an envs entry's 'kwargs' must be a table, got {kwargs!r}")
    if "id" in entry:
        return [SuiteEnv(entry["id"], dict(kwargs))]
    if "pattern" in entry:
        matched = [p.env_id for p in list_envs() if fnmatch.fnmatchcase(p.env_id, entry["pattern"])]
        if not matched:
            raise ConfigError(
                f"env pattern {entry['pattern']!r} matches no registered id (see `agentbench envs`)"
            )
        return [SuiteEnv(env_id, dict(kwargs)) for env_id in matched]
    raise ConfigError(f"an [[envs]] entry needs 'id' or 'pattern', got {entry!r}")


def _agent_spec(entry: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"name": entry}
    if not isinstance(entry, dict):
        raise ConfigError(
            f"an agents entry must be an agent name or a table with a 'name', got {entry!r}"
        )
    if not isinstance(entry.get("name"), str):
        raise ConfigError(f"an agents entry needs a 'name' string, got {entry!r}")
    return dict(entry)


# Keys of an agent entry that steer the runner rather than build the agent.
RUNNER_KEYS = ("episodes",)


def agent_label(spec: dict[str, Any]) -> str:
    """The name an agent's episodes are recorded under: its name, plus any settings."""
    settings = [f"{key}={value}" for key, value in spec.items()
                if key != "name" and key not in RUNNER_KEYS]  # fmt: skip
    return spec["name"] + (f"({','.join(settings)})" if settings else "")


def agent_seeds(suite: Suite, spec: dict[str, Any]) -> list[int]:
    """The seeds an agent plays: the suite's, or its first ``episodes`` (costly LLM agents)."""
    episodes = spec.get("episodes")
    if episodes is None:
        return suite.seeds
    if not isinstance(episodes, int) or not 1 <= episodes <= suite.episodes:
        raise ConfigError(
            f"agent {spec['name']!r}: episodes must be an integer from 1 to the suite's "
            f"{suite.episodes}, got {episodes!r}"
        )
    return suite.seeds[:episodes]


@dataclass
class RunResult:
    out_dir: Path
    episodes: list[Episode]
    metrics: list[dict[str, Any]]
    played: int  # episodes played by this call (the rest were resumed from disk)
    skipped_pairs: list[tuple[str, str]] = field(default_factory=list)  # (agent, env) unsupported


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("agentbench", "gymnasium", "numpy", "scipy", "pettingzoo", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def run_suite(
    suite: Suite,
    out_dir: str | Path,
    make_agent: Callable[..., Agent],
    *,
    progress: bool = True,
) -> RunResult:
    """Play every (agent, env) pair of the suite into ``out_dir``, resuming what is there.

    Raises :class:`RunDirectoryBusy` while another run writes into ``out_dir``, and
    :class:`ConfigError` for a directory that cannot be written or whose config.json is
    not a run config.
    """
    out_dir = Path(out_dir)
    make_output_dir(out_dir, "run directory")
    with _locked(out_dir):
        return _run_locked(suite, out_dir, make_agent, progress)


def _run_locked(
    suite: Suite, out_dir: Path, make_agent: Callable[..., Agent], progress: bool
) -> RunResult:
    from agentbench.metrics import summarize_run  # metrics pulls in scipy; import when used

    resolved = {"suite": asdict(suite), "seeds": suite.seeds}
    config_path = out_dir / CONFIG_FILE
    if config_path.exists():
        previous = _read_run_config(config_path)
        # The name and description say what ran; they do not change which episodes are due.
        if _settings(previous) != _settings(resolved):
            raise ConfigError(
                f"{out_dir} holds a run of a different suite or settings; resume it with "
                f"the same settings or choose another output directory"
            )
    write_json(config_path, {**resolved, "versions": _versions()}, indent=2)

    episodes_path = out_dir / EPISODES_FILE
    done = {ep.key for ep in read_episodes(episodes_path)} if episodes_path.exists() else set()
    agents = []
    for spec in suite.agents:
        seeds = agent_seeds(suite, spec)
        options = {k: v for k, v in spec.items() if k not in RUNNER_KEYS}
        agents.append((agent_label(spec), make_agent(**options), seeds))
    pairs, skipped = [], []
    for env in suite.envs:
        family = get_preset(env.id).family
        for label, agent, seeds in agents:
            target = pairs if agent.supports(family) else skipped
            target.append((label, agent, env, seeds))
    total = sum(1 for label, _, env, seeds in pairs for seed in seeds
                if (label, env.name, seed) not in done)  # fmt: skip

    bar = _progress_bar(total, f"suite {suite.name}", "ep", enabled=progress)
    # A second line that moves at every step: an LLM agent's episodes all end together,
    # minutes apart.
    step_bar = _progress_bar(None, "env steps", "step", enabled=progress)
    played = 0
    with EpisodeWriter(episodes_path) as writer:
        for label, agent, env, seeds in pairs:
            agent.name = label
            missing = [seed for seed in seeds if (label, env.name, seed) not in done]
            if not missing:
                continue
            bar.set_postfix_str(f"{label} on {env.name.split('/')[-1]}")

            def record(episode: Episode) -> None:
                nonlocal played
                writer.write(episode)
                played += 1
                bar.update(1)

            try:
                rollout(agent, env.id, missing, num_envs=suite.num_envs, env_kwargs=env.kwargs,
                        on_episode=record, on_step=step_bar.update)  # fmt: skip
            except GenerationError as error:
                bar.close()
                step_bar.close()
                raise GenerationError(
                    f"{error}; the {len(done) + played} episodes finished so far are kept in "
                    f"{out_dir}: run the same command again to resume"
                ) from None
    bar.close()
    step_bar.close()

    episodes = sorted(read_episodes(episodes_path), key=lambda ep: ep.key)
    metrics = summarize_run(episodes)
    write_json(out_dir / METRICS_FILE, metrics)
    write_atomic(out_dir / SUMMARY_FILE, summary_markdown(suite, metrics))
    return RunResult(out_dir, episodes, metrics, played,
                     [(label, env.name) for label, _, env, _ in skipped])  # fmt: skip


class RunDirectoryBusy(AgentbenchError):
    """Another process is writing into the run directory."""


def make_output_dir(path: Path, what: str) -> None:
    """Create ``path`` (and its parents) or say in one line why it cannot be written to."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a directory: choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create {what} {path}: {error.strerror} (choose another --out)"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable: choose another --out")


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory; the OS drops it when the process ends."""
    try:
        import fcntl
    except ImportError:
        raise ConfigError(
            "agentbench run locks its run directory with fcntl.flock, which this platform "
            "lacks; run on Linux or macOS"
        ) from None
    lock_path = out_dir / LOCK_FILE
    try:
        handle = lock_path.open("a+", encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            f"cannot write to run directory {out_dir}: {error.strerror} (choose another --out)"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise RunDirectoryBusy(
                f"run directory {out_dir} is in use by another agentbench run"
                + (f" (pid {holder})" if holder.isdigit() else "")
                + ": wait for it to finish or choose another --out"
            ) from None
        except OSError as error:
            raise ConfigError(
                f"cannot lock run directory {out_dir}: {error.strerror} (a file system "
                f"without locks? choose another --out)"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_run_config(path: Path) -> dict[str, Any]:
    """The config.json of a run directory being resumed, or a one-line error."""
    try:
        config = read_json(path, "run config")
    except ConfigError as error:  # unreadable, not UTF-8, not JSON, empty
        raise ConfigError(
            f"{error}, so it is not a run config: remove it to resume with the current "
            "settings, or choose another output directory"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("suite"), dict):
        raise ConfigError(
            f"{path} is not a run config (expected a JSON object with a 'suite' table): remove "
            f"it to resume with the current settings, or choose another output directory"
        )
    return config


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """What decides which episodes a run holds: the suite without its name and description."""
    suite = {k: v for k, v in config["suite"].items() if k not in ("name", "description")}
    if "env_ids" in suite:  # written before envs took settings: ids without any
        suite["envs"] = [{"id": env_id, "kwargs": {}} for env_id in suite.pop("env_ids")]
    return {"suite": suite, "seeds": config.get("seeds")}


def _progress_bar(total: int | None, description: str, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit, disable=not enabled, leave=False)


def summary_markdown(suite: Suite, metrics: Sequence[dict[str, Any]]) -> str:
    """The comparison tables (one per env family) as Markdown."""
    from agentbench.tables import comparison_tables

    lines = [f"# Suite `{suite.name}`", ""]
    if suite.description:
        lines += [suite.description, ""]
    lines += [
        f"{suite.episodes} episodes per agent and env (seeds {suite.seed}.."
        f"{suite.seed + suite.episodes - 1}); mean ± 95% CI half-width over episodes.",
        "",
    ]
    fewer = [f"`{agent_label(spec)}` plays the first {spec['episodes']} seeds only"
             for spec in suite.agents if spec.get("episodes") is not None]  # fmt: skip
    if fewer:
        lines += ["; ".join(fewer) + ".", ""]
    for title, header, rows in comparison_tables(metrics, [agent_label(a) for a in suite.agents]):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]  # fmt: skip
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)
