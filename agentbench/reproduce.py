"""Published experiments, one command each: ``agentbench reproduce NAME``.

An experiment is a TOML file in ``agentbench/paper/`` (package data, like the
suites). It says what the experiment shows and where it is published, how to run
it, at two scales, and the published numbers to put next to ours:

    title = "..."                 # one line
    description = "..."           # what it shows, and how to read it
    paper = "..."                 # where it is published
    kind = "suite"                # "suite": a suite run; "probe": failure-mode probes;
                                  # "train": training runs, then a suite that evaluates them

    [suite]                       # kind = "suite": a suite table; "{model}" is --model
    [probe]                       # kind = "probe": probes = [...], env and their settings
    [train.NAME]                  # kind = "train": a training config (agentbench train's
                                  # keys); [model] name "{model}" is --model, and
                                  # "{run:NAME}" a run written above it (a warm start)
    [evaluate]                    # kind = "train": the suite; "{run:NAME}" is the model
                                  # trained by [train.NAME]
    paired_reference = "..."      # kind = "train", optional: the agent (a part of its
                                  # label) every other is paired with (paired.md)

    [scale.small]                 # merged over the tables above: a 2-core CPU, < 1 hour
    note = "..."                  # what the small scale changes (the report says it)
    [scale.paper]                 # the published setting (a GPU or a served model)
    note = "..."

    [[reference]]                 # a published number, or a claim, to compare with
    label = "..."                 # the row's name
    agent = "..."                 # suite: a part of our agent label that selects the rows
    env = "..."                   # suite, optional: a part of the env name
    metric = "coverage"           # suite: a metrics.json key; probe: a dotted path in its JSON
    published = 0.40              # optional: the published value, in the metric's units
    source = "Gemma2 2B"          # which model or figure the number is from
    claim = "..."                 # optional: what the paper reports, in words

``run_experiment`` writes into one directory: ``train/NAME/`` (each training run,
its exported model in ``model/``), ``run/`` (the suite run) or ``analysis/`` (the
probe results), ``paired.md`` (training: every agent paired with the reference on
the same seeds), ``report/`` (``agentbench report`` of it) and
``reference.md`` / ``reference.json`` (our value with its 95% interval next to
every published one), with the scale and its note at the top.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentbench.errors import ConfigError
from agentbench.io import named_toml, package_tomls, read_json, read_toml, write_atomic, write_json
from agentbench.memory import trim_freed_memory
from agentbench.settings import config_from_dict, setting

PAPER_DIR = "paper"
KINDS = ("suite", "probe", "train")
RUN_PLACEHOLDER = "{{run:{name}}}"  # kind = train: the model trained by [train.NAME]
SCALES = ("small", "paper")
MODEL_PLACEHOLDER = "{model}"
DEFAULT_MODEL = "smollm2-135m-instruct"
PROBE_FILES = {"frequency-bias": "frequency_bias.json", "knowing-doing": "knowing_doing.json"}


@dataclass
class Reference:
    """A published number (or claim) and how to find ours."""

    label: str = setting("", "the row's name in reference.md")
    metric: str = setting("", "suite: a metrics.json key; probe: a dotted path in its JSON")
    agent: str = setting("", "suite: a part of our agent label that selects the rows")
    env: str = setting("", "suite: a part of the env name that selects the rows")
    published: float | None = setting(None, "the published value, in the metric's units")
    source: str = setting("", "which model or figure the published value is from")
    claim: str = setting("", "what the paper reports, in words")


@dataclass
class Experiment:
    """One published experiment (a TOML file in agentbench/paper/)."""

    name: str = setting("", "the file's stem")
    title: str = setting("", "one line")
    description: str = setting("", "what the experiment shows and how to read it")
    paper: str = setting("", "where it is published")
    kind: str = setting("suite", '"suite" or "probe"')
    suite: dict[str, Any] = setting(factory=dict, help="kind = suite: the suite table")
    probe: dict[str, Any] = setting(factory=dict, help="kind = probe: probes, env, settings")
    train: dict[str, Any] = setting(factory=dict, help="kind = train: [train.NAME] configs")
    evaluate: dict[str, Any] = setting(factory=dict, help="kind = train: the evaluation suite")
    paired_reference: str = setting("", "kind = train: the agent the others are paired with")
    scale: dict[str, Any] = setting(factory=dict, help="[scale.small] and [scale.paper]")
    reference: list[Any] = setting(factory=list, help="[[reference]] rows")
    references: list[Reference] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"experiment {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "train" and not (self.train and self.evaluate):
            raise ConfigError(
                f"experiment {self.name}: kind train needs [train.NAME] tables and [evaluate]"
            )
        if sorted(self.scale) != sorted(SCALES):
            raise ConfigError(
                f"experiment {self.name}: needs [scale.small] and [scale.paper] tables, "
                f"got {sorted(self.scale)}"
            )
        self.references = [
            config_from_dict(Reference, row, f"experiment {self.name} [[reference]]")
            for row in self.reference
        ]

    def table(
        self, scale: str, model: str, base_url: str | None = None, runs: Path | None = None
    ) -> dict[str, Any]:
        """The suite or probe table at ``scale``, with the model filled in; kind = train:
        ``{"train": {NAME: config}, "evaluate": suite}``, trained models under ``runs``."""
        if scale not in SCALES:
            raise ConfigError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
        overrides = {k: v for k, v in self.scale[scale].items() if k != "note"}
        if self.kind == "probe":
            return _merged(self.probe, overrides)
        if self.kind == "suite":
            return self._suite(_merged(self.suite, overrides), model, base_url, {})
        tables = _merged({"train": self.train, "evaluate": self.evaluate}, overrides)
        runs = runs or Path("train")
        trained = {RUN_PLACEHOLDER.format(name=n): str(runs / n / "model") for n in tables["train"]}
        earlier: list[str] = []
        for name, config in tables["train"].items():
            start = config.setdefault("model", {}).get("name")
            if start == MODEL_PLACEHOLDER:
                config["model"]["name"] = model
            elif start in trained:  # a warm start: a run trained before this one
                if start not in earlier:
                    raise ConfigError(
                        f"experiment {self.name}: [train.{name}] starts from {start}, which is "
                        "not trained before it (runs train in the order they are written)"
                    )
                config["model"]["name"] = trained[start]
            earlier.append(RUN_PLACEHOLDER.format(name=name))
        return {
            "train": tables["train"],
            "evaluate": self._suite(tables["evaluate"], model, base_url, trained),
        }

    def _suite(
        self, table: dict[str, Any], model: str, base_url: str | None, trained: dict[str, str]
    ) -> dict[str, Any]:
        table["agents"] = [_with_model(a, model, base_url, trained) for a in table["agents"]]
        table.setdefault("name", self.name)
        table.setdefault("description", self.title)
        return table

    def note(self, scale: str) -> str:
        return str(self.scale[scale].get("note", ""))


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, tables into tables (copies, never views)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _with_model(agent: Any, model: str, base_url: str | None, trained: dict[str, str]) -> Any:
    if not isinstance(agent, dict) or agent.get("name") != "llm":
        return agent
    name = agent.get("model")
    if name == MODEL_PLACEHOLDER:
        name = model
    elif name in trained:
        return {**agent, "model": trained[name]}  # a local directory: no server
    agent = {**agent, "model": name}
    if base_url is not None:
        agent["base_url"] = base_url
    return agent


def builtin_experiments() -> dict[str, Path]:
    """Experiment names and their TOML files."""
    return package_tomls(PAPER_DIR)


def load_experiment(name: str) -> Experiment:
    """A built-in experiment by name (`agentbench reproduce --list`), or a TOML file by path."""
    path = named_toml(name, builtin_experiments(), "experiment")
    data = read_toml(path, "experiment file")
    return config_from_dict(Experiment, {"name": path.stem, **data}, f"experiment {path.stem}")


# ---------------------------------------------------------------- running


@dataclass
class ReproduceResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    seconds: float


def run_experiment(
    experiment: Experiment,
    out_dir: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    scale: str = "small",
    base_url: str | None = None,
    make_agent: Callable[..., Any] | None = None,
    load_generator: Callable[..., Any] | None = None,
    progress: bool = True,
) -> ReproduceResult:
    """Run ``experiment`` at ``scale`` into ``out_dir`` (a run resumes), then write its
    report and the reference table."""
    from agentbench.analysis.report import write_report

    out_dir = Path(out_dir)
    if experiment.kind == "train" and base_url is not None:
        raise ConfigError(
            f"experiment {experiment.name} fine-tunes the model, which needs its weights here: "
            "give a local model (catalog name or directory), not --base-url"
        )
    table = experiment.table(scale, model, base_url, runs=out_dir / "train")
    started = time.perf_counter()
    if experiment.kind == "train":
        for name, config in table["train"].items():
            _train(config, out_dir / "train" / name, progress)
        table = table["evaluate"]
    if experiment.kind in ("suite", "train"):
        from agentbench.agent.factory import make_agent as default_make_agent
        from agentbench.suite import run_suite, suite_from_dict

        suite = suite_from_dict(table, default_name=experiment.name)
        source = out_dir / "run"
        run_suite(suite, source, make_agent or default_make_agent, progress=progress)
        results: Any = read_json(source / "metrics.json", "run metrics")
        if experiment.paired_reference:
            reference = experiment.paired_reference.replace(MODEL_PLACEHOLDER, model)
            _write_paired(source, reference, out_dir)
    else:
        source = out_dir / "analysis"
        results = _run_probes(table, model, base_url, source, load_generator, progress)
    seconds = time.perf_counter() - started
    write_report([source], out_dir / "report", title=f"{experiment.title} ({scale} scale)")
    rows = [_reference_row(ref, experiment.kind, results, model) for ref in experiment.references]
    header = {"experiment": experiment.name, "title": experiment.title, "scale": scale,
              "note": experiment.note(scale), "model": model, "paper": experiment.paper,
              "seconds": round(seconds, 1)}  # fmt: skip
    write_json(out_dir / "reference.json", {**header, "rows": rows})
    write_atomic(out_dir / "reference.md", reference_markdown(experiment, header, rows))
    return ReproduceResult(out_dir, rows, seconds)


def _train(config: dict[str, Any], out: Path, progress: bool) -> None:
    """One training run into ``out`` (resumed when one is there), its model in out/model."""
    from agentbench.rlft.run import export_policy, make_trainer

    trainer, _ = make_trainer({"progress": progress, **config}, out)
    trainer.train()  # the evaluation suite evaluates it, on the experiment's own seeds
    export_policy(trainer, out / "model")
    del trainer
    trim_freed_memory()  # hand this run's freed heap back before the next loads (agentbench.memory)


def _write_paired(run: Path, reference: str, out_dir: Path) -> None:
    from agentbench.analysis.paired import comparisons_markdown, paired_comparisons
    from agentbench.metrics import CONFIDENCE
    from agentbench.records import read_episodes

    comparisons = paired_comparisons(read_episodes(run / "episodes.jsonl"), reference)
    write_atomic(out_dir / "paired.md", comparisons_markdown(comparisons, CONFIDENCE))
    write_json(out_dir / "paired.json", [c.to_dict() for c in comparisons])


PROBE_SETTINGS = ("probes", "env", "prefixes", "repetition_step", "histories", "budget", "seed")


def _run_probes(
    table: dict[str, Any],
    model: str,
    base_url: str | None,
    out: Path,
    load_generator: Callable[..., Any] | None,
    progress: bool,
) -> dict[str, Any]:
    from agentbench.analysis.frequency_bias import run_frequency_bias_probe
    from agentbench.analysis.knowing_doing import run_knowing_doing_probe

    unknown = sorted(set(table) - set(PROBE_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown [probe] settings {unknown}: accepted are {PROBE_SETTINGS}")
    if load_generator is None:
        from agentbench.agent.factory import load_generator
    generator = load_generator(model, **({"base_url": base_url} if base_url else {}))
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for probe in table["probes"]:
        if probe == "frequency-bias":
            result = run_frequency_bias_probe(
                generator, env_id=table["env"], n_prefixes=table.get("prefixes", 24),
                repetitions=range(0, 101, table.get("repetition_step", 5)),
                seed=table.get("seed", 0), progress=progress,
            )  # fmt: skip
        elif probe == "knowing-doing":
            result = run_knowing_doing_probe(
                generator, env_id=table["env"], n_histories=table.get("histories", 64),
                budget=table.get("budget", 256), seed=table.get("seed", 0), progress=progress,
            )  # fmt: skip
        else:
            raise ConfigError(f"unknown probe {probe!r}: accepted are {', '.join(PROBE_FILES)}")
        results[probe] = result.to_dict()
        write_json(out / PROBE_FILES[probe], results[probe])
    return results


def _reference_row(ref: Reference, kind: str, results: Any, model: str) -> dict[str, Any]:
    """Our value(s) for one reference: every matching metrics row (suite and training
    experiments; "{model}" in its agent is --model), or the value at the reference's
    path in the probe results."""
    row: dict[str, Any] = {"label": ref.label, "metric": ref.metric, "published": ref.published,
                           "source": ref.source, "claim": ref.claim}  # fmt: skip
    if kind in ("suite", "train"):
        agent = ref.agent.replace(MODEL_PLACEHOLDER, model)
        row["ours"] = [
            {"agent": m["agent"], "env": m["env_id"], "value": m.get(ref.metric)}
            for m in results
            if agent in m["agent"] and ref.env in m["env_id"] and ref.metric in m
        ]
    else:
        probe, *path = ref.metric.split(".")
        value: Any = results.get(probe)
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        row["ours"] = [{"agent": "", "env": "", "value": value}]
    return row


def _value_text(value: Any) -> str:
    if isinstance(value, dict):
        mean, low, high = value.get("mean"), value.get("low"), value.get("high")
        if mean is None:
            return "n/a"
        if low is None or high is None:
            return f"{mean:.3g}"
        return f"{mean:.3g} [{low:.3g}, {high:.3g}]"
    if isinstance(value, int | float):
        return f"{value:.3g}"
    return "n/a" if value is None else str(value)


def reference_markdown(experiment: Experiment, header: dict[str, Any], rows: list[dict]) -> str:
    lines = [
        f"# {experiment.title}",
        "",
        experiment.description,
        "",
        f"Published: {experiment.paper}. Model here: `{header['model']}`; scale "
        f"`{header['scale']}` ({header['seconds']:.0f} s).",
    ]
    if header["note"]:
        lines += ["", f"Scale `{header['scale']}`: {header['note']}"]
    lines += ["", "| reference | metric | ours (95% CI) | where | published | source |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        published = "-" if row["published"] is None else f"{row['published']:.3g}"
        source = "; ".join(part for part in (row["source"], row["claim"]) if part)
        for ours in row["ours"] or [{"agent": "", "env": "", "value": None}]:
            where = " on ".join(p for p in (ours["agent"], _short(ours["env"])) if p) or "-"
            lines.append(f"| {row['label']} | {row['metric']} | {_value_text(ours['value'])} | "
                         f"{where} | {published} | {source} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _short(env: str) -> str:
    return env.removeprefix("agentbench/")
