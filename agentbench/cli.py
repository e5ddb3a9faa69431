"""The ``agentbench`` command.

Errors a user can cause (bad id, bad value, bad file) print one line and exit
with status 2; a traceback means a bug in agentbench.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentbench.agent.factory import AGENT_NAMES, LLM_AGENT, make_agent
from agentbench.envs import FAMILIES, list_envs
from agentbench.errors import AgentbenchError, ConfigError
from agentbench.export import EPISODE_COLUMNS, FORMATS, STEP_COLUMNS, export_runs
from agentbench.io import write_json
from agentbench.settings import HELP, default_text, settings_help_text
from agentbench.suite import (
    Suite,
    SuiteEnv,
    agent_label,
    builtin_suites,
    load_suite,
    make_output_dir,
    run_suite,
)
from agentbench.tables import comparison_tables


def _cmd_envs(args: argparse.Namespace, console: Console) -> int:
    presets = list_envs(include_parametric=args.all)
    if args.family:
        presets = [p for p in presets if p.family == args.family]
    table = Table(title=f"agentbench envs ({len(presets)})")
    table.add_column("id", no_wrap=True)
    table.add_column("family")
    table.add_column("description")
    for preset in presets:
        table.add_row(preset.env_id, preset.family, preset.description)
    console.print(table)
    return 0


def _cmd_suites(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="built-in suites (agentbench run NAME)")
    for column in ("name", "envs", "agents", "episodes", "file"):
        table.add_column(column)
    for name, path in sorted(builtin_suites().items()):
        suite = load_suite(name)
        agents = ", ".join(agent_label(a) for a in suite.agents)
        table.add_row(name, str(len(suite.env_ids)), agents, str(suite.episodes), str(path))
    console.print(table)
    return 0


def _cmd_reproduce(args: argparse.Namespace, console: Console) -> int:
    from agentbench.reproduce import builtin_experiments, load_experiment, run_experiment

    if args.list or args.name is None:
        table = Table(title="published experiments (agentbench reproduce NAME)")
        for column in ("name", "kind", "title", "small scale"):
            table.add_column(column)
        for name in sorted(builtin_experiments()):
            experiment = load_experiment(name)
            table.add_row(name, experiment.kind, experiment.title, experiment.note("small"))
        console.print(table)
        return 0
    experiment = load_experiment(args.name)
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{experiment.name}-{args.scale}"
    make_output_dir(out, "output directory")
    result = run_experiment(experiment, out, model=args.model, scale=args.scale,
                            base_url=args.base_url, progress=not args.no_progress)  # fmt: skip
    console.print((out / "reference.md").read_text(encoding="utf-8"), markup=False)
    console.print(f"{experiment.name} ({args.scale}) in {result.seconds:.0f} s: {out}")
    return 0


def _cmd_agents(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="agents (agentbench run --agent NAME)")
    table.add_column("name")
    table.add_column("families")
    for name in AGENT_NAMES:
        if name == LLM_AGENT:  # building it would load a model
            table.add_row(name, "all (set model=..., see README)")
            continue
        agent = make_agent(name)
        families = [f for f in FAMILIES if agent.supports(f)]
        table.add_row(name, ", ".join(families))
    console.print(table)
    return 0


def _cmd_models(args: argparse.Namespace, console: Console) -> int:
    from agentbench.models.catalog import list_local_models

    table = Table(title="local models (agentbench run --agent llm, model=NAME)")
    rows = list_local_models()
    for column in rows[0] if rows else ("name",):
        table.add_column(str(column))
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)
    return 0


PROBES = ("frequency-bias", "knowing-doing", "decision-at-k")
DEFAULT_PROBES = PROBES[:2]  # decision-at-k samples n answers a history: asked for by name


def _cmd_analyze(args: argparse.Namespace, console: Console) -> int:
    from agentbench.agent.factory import load_generator
    from agentbench.analysis.at_k import run_at_k_probe
    from agentbench.analysis.frequency_bias import run_frequency_bias_probe
    from agentbench.analysis.knowing_doing import run_knowing_doing_probe
    from agentbench.envs import get_preset

    get_preset(args.env)  # ConfigError for an unknown id, before loading a model
    _check_at_least(args, seed=0, prefixes=1, repetition_step=1, histories=1, budget=1,
                    samples=1)  # fmt: skip
    try:
        ks = [int(k) for k in args.k.split(",")] if args.k else None
    except ValueError:
        raise ConfigError(f"--k takes whole numbers separated by commas, got {args.k!r}") from None
    out = Path(args.out)
    make_output_dir(out, "analysis directory")
    own = None
    if args.trajectories:
        own = _agent_episodes(args.trajectories, args.env, args.agent)
    elif args.agent:
        raise ConfigError("--agent names whose episodes --trajectories takes; give --trajectories")
    backend = {"base_url": args.base_url} if args.base_url else {}
    generator = load_generator(args.model, **backend)
    for probe in args.probe or DEFAULT_PROBES:
        started = time.perf_counter()
        if probe == "decision-at-k":
            samples = args.samples or 16
            result = run_at_k_probe(generator, env_id=args.env, n_histories=args.histories,
                                    n_samples=samples, ks=ks or [1, 4, 16], cot=args.cot,
                                    budget=args.budget, seed=args.seed, episodes=own)  # fmt: skip
        elif probe == "frequency-bias":
            result = run_frequency_bias_probe(generator, env_id=args.env, n_prefixes=args.prefixes,
                                              repetitions=range(0, 101, args.repetition_step),
                                              seed=args.seed)  # fmt: skip
        else:
            samples = args.samples or 1  # several: sampled at temperature 1, with pass@k
            result = run_knowing_doing_probe(generator, env_id=args.env, n_histories=args.histories,
                                             budget=args.budget, seed=args.seed, episodes=own,
                                             samples=samples, ks=ks or [1, samples],
                                             temperature=1.0 if samples > 1 else 0.0)  # fmt: skip
        path = out / f"{probe.replace('-', '_')}.json"
        write_json(path, result.to_dict())
        console.print(f"{probe}: {path} ({time.perf_counter() - started:.0f} s)")
    return 0


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from agentbench.analysis.report import write_report

    make_output_dir(Path(args.out), "report directory")
    paths = write_report([Path(source) for source in args.sources], Path(args.out), args.title)
    console.print(f"report: {paths.markdown} and {paths.html}")
    return 0


def _run_episodes(source: str) -> list[Any]:
    """The episodes of a run directory or an episodes .jsonl file."""
    from agentbench.records import read_episodes
    from agentbench.suite import EPISODES_FILE

    path = Path(source)
    path = path / EPISODES_FILE if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"{source} is neither a run directory nor an episodes .jsonl file")
    return read_episodes(path)


def _agent_episodes(source: str, env_id: str, agent: str | None) -> list[Any]:
    """One agent's episodes on ``env_id`` in a run (``agent``: its label or a unique part)."""
    from agentbench.analysis.paired import find_reference

    episodes = [ep for ep in _run_episodes(source) if ep.env_name == env_id]
    agents = sorted({ep.agent for ep in episodes})
    if not agents:
        raise ConfigError(f"{source} has no episodes on {env_id} (give its bandit with --env)")
    if agent is None and len(agents) > 1:
        raise ConfigError(f"{source} has several agents on {env_id}; name one with --agent: "
                          + ", ".join(agents))  # fmt: skip
    chosen = agents[0] if agent is None else find_reference(agents, agent)
    if chosen is None:
        raise ConfigError(f"no agent {agent!r} on {env_id} in {source}; agents: "
                          + ", ".join(agents))  # fmt: skip
    return [ep for ep in episodes if ep.agent == chosen]


def _cmd_compare(args: argparse.Namespace, console: Console) -> int:
    import json

    from agentbench.analysis.paired import METRIC_NAMES, comparisons_markdown, paired_comparisons
    from agentbench.io import write_atomic
    from agentbench.metrics import CONFIDENCE

    episodes = [episode for source in args.sources for episode in _run_episodes(source)]
    metrics = args.metrics or list(METRIC_NAMES)
    comparisons = paired_comparisons(episodes, args.reference, metrics, CONFIDENCE)
    if not comparisons:
        agents = sorted({episode.agent for episode in episodes})
        raise ConfigError(
            f"no agent shares seeds with reference {args.reference!r} on any env; agents: "
            + ", ".join(agents)
        )
    text = comparisons_markdown(comparisons, CONFIDENCE)
    console.print(text, markup=False, highlight=False)
    if args.out:
        out = Path(args.out)
        make_output_dir(out, "comparison directory")
        write_atomic(out / "paired.md", text)
        write_atomic(
            out / "paired.json",
            json.dumps([c.to_dict() for c in comparisons], indent=1, allow_nan=False),
        )
        console.print(f"comparison: {out / 'paired.md'} and {out / 'paired.json'}")
    return 0


def _cmd_export(args: argparse.Namespace, console: Console) -> int:
    runs: dict[str, list[Any]] = {}
    for source in args.runs:
        if source in runs:
            raise ConfigError(f"{source} is given twice: name each run once")
        runs[source] = _run_episodes(source)
    out = Path(args.out)
    make_output_dir(out, "export directory")
    exported = export_runs(runs, out, args.format)
    console.print(
        f"steps: {exported.steps} ({exported.n_steps} rows); "
        f"episodes: {exported.episodes} ({exported.n_episodes} rows)"
    )
    return 0


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    from agentbench.io import read_toml
    from agentbench.rlft.run import export_policy, make_trainer, train_and_evaluate, trained_for

    data = read_toml(args.config, "training config file")
    trainer, resumed = make_trainer(data, args.out)
    config = trainer.config
    if resumed:
        console.print(f"resuming the run in {config.output_dir} with its own config")
    started = time.perf_counter()
    records, summary = train_and_evaluate(trainer)
    parallel = getattr(trainer, "parallel", None)
    if parallel is not None and not parallel.is_main:
        return 0  # under accelerate launch, one process reports and exports
    steps = trained_for(trainer)
    if summary:  # cloning has no held-out evaluation of its own
        _print_evaluation(console, summary, f"held-out evaluation after {steps} (greedy)")
    console.print(
        f"{steps} in {time.perf_counter() - started:.0f} s"
        + (f"; metrics and checkpoints in {config.output_dir}" if config.output_dir else "")
    )
    if args.export:
        console.print(f"fine-tuned model: {export_policy(trainer, args.export)}")
    return 0


def _print_evaluation(console: Console, summary: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    for column in ("metric", "mean", "95% CI"):
        table.add_column(column)
    for name in ("return", "final_regret", "invalid_rate", "forced_rate", "coverage", "win_rate"):
        if isinstance(summary.get(name), dict):
            estimate = summary[name]
            interval = (f"[{estimate['low']:.3f}, {estimate['high']:.3f}]"
                        if estimate["low"] is not None else "n/a")  # fmt: skip
            table.add_row(name, f"{estimate['mean']:.3f}", interval)
    console.print(table)


def _cmd_sft(args: argparse.Namespace, console: Console) -> int:
    from agentbench.envs import get_preset
    from agentbench.rlft.config import EnvSettings, ModelSettings
    from agentbench.rlft.run import Cloning, CloningConfig, export_policy
    from agentbench.rlft.sft import SFTConfig
    from agentbench.settings import config_from_dict

    get_preset(args.env)  # ConfigError for an unknown id, before loading a model
    given = {f.name: getattr(args, f.name) for f in _config_options(SFTConfig, SFT_CLI_SKIP)}
    given = {name: value for name, value in given.items() if value is not None}
    sft = config_from_dict(SFTConfig, {**given, "seed": args.seed, "progress": True}, "SFT")
    chosen = {"name": args.model, "dtype": args.dtype, "lora_r": args.lora_r}
    model = ModelSettings(use_lora=args.lora, **{k: v for k, v in chosen.items() if v is not None})
    model = dataclasses.replace(model, lora_alpha=2 * model.lora_r)
    config = CloningConfig(
        mode=args.mode,
        episodes=args.episodes,
        seed=args.seed,
        history_length=None if args.history_length == "all" else int(args.history_length),
        model=model,
        env=EnvSettings(args.env, _key_values(args.env_arg)),
        sft=sft,
        output_dir=args.out,
    )
    started = time.perf_counter()
    cloning = Cloning(config)
    records = cloning.train()
    console.print(f"{cloning.examples} expert examples from {args.episodes} UCB episodes")
    path = export_policy(cloning, args.out)  # the model directory replaces the run's files
    write_json(path / "sft.json", {"args": vars(args) | {"func": None}, **cloning.record(records)})
    console.print(
        f"SFT ({args.mode} cloning) in {time.perf_counter() - started:.0f} s, final loss "
        f"{records[-1]['loss']:.4f}; fine-tuned model: {path}"
    )
    return 0


def _key_values(items: Sequence[str] | None) -> dict[str, Any]:
    """KEY=VALUE strings as a dict; values read as JSON where they parse (numbers, true)."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r} is not KEY=VALUE")
        try:
            result[key] = json.loads(value)
        except json.JSONDecodeError:
            result[key] = value
    return result


def _name_and_settings(text: str, option: str) -> tuple[str, dict[str, Any]]:
    """``NAME,KEY=VALUE,...`` (an --agent or --env value) as the name and its settings."""
    name, *items = text.split(",")
    if not name or "=" in name:
        raise ConfigError(
            f"{option} {text!r}: expected NAME or NAME,KEY=VALUE,... (the name comes first)"
        )
    return name, _key_values(items)


def _check_at_least(args: argparse.Namespace, **minimums: int) -> None:
    """A one-line error for an integer option below its minimum (a negative --seed, ...)."""
    for name, minimum in minimums.items():
        value = getattr(args, name)
        if value is not None and value < minimum:
            option = "--" + name.replace("_", "-")
            raise ConfigError(f"{option} must be at least {minimum}, got {value}")


def _describe_flag_run(suite: Suite, base: str, suite_given: bool, flags: list[str]) -> None:
    """Name and describe a suite whose agents or envs the command line replaced.

    The suite file's name and description told of its own agents and envs (the default
    suite's mention SmolLM2); config.json and summary.md must tell what this run plays.
    """
    labels = ", ".join(agent_label(spec) for spec in suite.agents)
    agents = ("Agents " if len(suite.agents) > 1 else "Agent ") + labels
    envs = ", ".join(env.name.removeprefix("agentbench/") for env in suite.envs)
    if flags == ["--agent"]:
        text = f"{agents} (from --agent) on the envs of suite `{base}`: {envs}."
    elif flags == ["--env"]:
        text = f"The agents of suite `{base}` ({labels}) on {envs} (from --env)."
    else:
        text = f"{agents} on {envs}, from --agent and --env."
        if suite_given:
            text += f" Episodes, seed and num_envs from suite `{base}` unless given."
    suite.name = "custom"
    suite.description = text


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    suite = load_suite(args.suite or "default")
    base = suite.name
    flags = []
    if args.agent:
        suite.agents = [
            {"name": name, **settings}
            for name, settings in (_name_and_settings(text, "--agent") for text in args.agent)
        ]
        flags.append("--agent")
    if args.env:
        suite.envs = [SuiteEnv(*_name_and_settings(text, "--env")) for text in args.env]
        flags.append("--env")
    if flags:
        _describe_flag_run(suite, base, args.suite is not None, flags)
    for option in ("episodes", "seed", "num_envs"):
        if getattr(args, option) is not None:
            setattr(suite, option, getattr(args, option))
    suite.validate()
    out_dir = (
        Path(args.out)
        if args.out
        else Path("runs") / f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    started = time.perf_counter()
    result = run_suite(suite, out_dir, make_agent, progress=not args.no_progress)
    elapsed = time.perf_counter() - started
    order = [agent_label(spec) for spec in suite.agents]
    for title, header, rows in comparison_tables(result.metrics, order):
        table = Table(title=title)
        for column in header:
            table.add_column(column, no_wrap=column == header[0])
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # cells hold [brackets], not markup
        console.print(table)
    resumed = len(result.episodes) - result.played
    console.print(
        f"{result.played} episodes played"
        + (f", {resumed} resumed from disk" if resumed else "")
        + f" in {elapsed:.1f} s; run directory: {out_dir}"
    )
    return 0


SFT_CLI_SKIP = ("seed", "progress")  # --seed is also the expert's; progress is always on
CLI_ALIASES = {"learning_rate": ("--lr",)}  # the short spelling earlier versions took


def _config_options(cls: type, skip: Sequence[str]) -> list[dataclasses.Field]:
    """The fields of a config class that have a command-line option."""
    return [f for f in dataclasses.fields(cls) if f.init and f.name not in skip]


def _add_config_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str]) -> None:
    """One --option per field of ``cls`` (not in ``skip``), with the help and default the
    field declares (agentbench.settings); an option left out keeps that default."""
    hints = typing.get_type_hints(cls)
    for field in _config_options(cls, skip):
        name, kind = field.name, hints[field.name]
        options = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
        flags = ["--" + name.replace("_", "-"), *CLI_ALIASES.get(name, ())]
        help_text = f"{field.metadata.get(HELP, '')} (default: {default_text(field)})"
        if options[0] is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)  # fmt: skip
        else:
            parser.add_argument(*flags, dest=name, type=options[0], default=None, metavar="X",
                                help=help_text)  # fmt: skip


def _training_settings_epilog() -> str:
    """Every setting a training config can hold, with its default and help."""
    from agentbench.agent.llm import LLMAgentSettings
    from agentbench.rlft.config import EnvSettings, ModelSettings, PPOConfig
    from agentbench.rlft.expert_iteration import ExpertIterationConfig
    from agentbench.rlft.return_conditioned import ReturnConditionedConfig
    from agentbench.rlft.run import CloningConfig
    from agentbench.rlft.sampling import SelfTrainingConfig
    from agentbench.rlft.sft import SFTConfig

    shared = {f.name for f in dataclasses.fields(SelfTrainingConfig)}
    parts = [
        'PPO settings (method = "ppo", the default; agentbench/rlft/config.py):',
        settings_help_text(PPOConfig),
        'Expert iteration and return-conditioned training (method = "expert-iteration" or '
        '"return-conditioned"), shared settings:',
        settings_help_text(SelfTrainingConfig, skip=("sft",)),
        'method = "expert-iteration" only:',
        settings_help_text(ExpertIterationConfig, skip=tuple(shared)),
        'method = "return-conditioned" only:',
        settings_help_text(ReturnConditionedConfig, skip=tuple(shared)),
        'method = "cloning" (behaviour or thought cloning of a UCB expert, agentbench sft as a '
        "config; CloningConfig, with [model], [env] and [sft] tables):",
        settings_help_text(CloningConfig, skip=("model", "env", "sft")),
        "[sft] table of the self-training and cloning methods (SFTConfig):",
        settings_help_text(SFTConfig),
        "[model] table of every method (ModelSettings):",
        settings_help_text(ModelSettings),
        "[env] table of every method (EnvSettings):",
        settings_help_text(EnvSettings),
        "[agent] table of every method (LLMAgentSettings; return_token is not trainable yet; "
        "answer_forcing, self_consistency and self_correction train with PPO only, try_all "
        'and epsilon with PPO and advantage = "mc"):',
        settings_help_text(LLMAgentSettings),
    ]
    return "\n\n".join(parts)


def _suite_keys_epilog() -> str:
    """The keys a suite TOML file can hold, with their defaults and help."""
    from agentbench.suite import SuiteFile

    return "suite file keys (agentbench/suites/*.toml):\n\n" + settings_help_text(SuiteFile)


def _export_columns_epilog() -> str:
    return (
        f"steps columns: {', '.join(STEP_COLUMNS)}. episodes columns: "
        f"{', '.join(EPISODE_COLUMNS)}. Nested values are JSON strings; missing ones are "
        "empty cells (csv) or null (jsonl)."
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line. The settings of ``train`` and ``sft`` come from the training
    config classes, which import torch: they are added only when ``argv`` (default:
    sys.argv) names that command, so the other commands start fast."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="agentbench",
        description="A gym and benchmark for LLM agents that make decisions.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    envs = sub.add_parser("envs", help="list the registered environments")
    envs.add_argument("--all", action="store_true", help="include the parametric ids")
    envs.add_argument("--family", choices=FAMILIES, help="only this family")
    envs.set_defaults(func=_cmd_envs)

    suites = sub.add_parser("suites", help="list the built-in suites")
    suites.set_defaults(func=_cmd_suites)

    reproduce = sub.add_parser(
        "reproduce",
        help="run a published experiment and put the published numbers next to ours",
    )
    reproduce.add_argument("name", nargs="?", help="experiment name or TOML file (see --list)")
    reproduce.add_argument("--list", action="store_true", help="list the experiments")
    reproduce.add_argument(
        "--model", default="smollm2-135m-instruct", help="catalog name, path or server model"
    )
    reproduce.add_argument("--base-url", help="an OpenAI-compatible server serving --model")
    reproduce.add_argument(
        "--scale",
        choices=["small", "paper"],
        default="small",
        help="small: a 2-core CPU in under an hour (fewer episodes, shorter budgets; the "
        "report says which); paper: the published setting",
    )
    reproduce.add_argument("--out", help="output directory (default runs/reproduce-NAME-SCALE)")
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bars")
    reproduce.set_defaults(func=_cmd_reproduce)

    agents = sub.add_parser("agents", help="list the agents that can be named in a suite")
    agents.set_defaults(func=_cmd_agents)

    models = sub.add_parser("models", help="list the models available locally")
    models.set_defaults(func=_cmd_models)

    analyze = sub.add_parser("analyze", help="run the failure-mode probes on a model")
    analyze.add_argument(
        "--model", default="smollm2-135m-instruct", help="catalog name or server model"
    )
    analyze.add_argument(
        "--base-url", help="OpenAI-compatible server (scoring needs a completions endpoint)"
    )
    analyze.add_argument(
        "--probe",
        action="append",
        choices=PROBES,
        help="probe to run (repeatable; default: frequency-bias and knowing-doing)",
    )
    analyze.add_argument(
        "--env",
        default="agentbench/GaussianBandit-10arms-medium-button-v0",
        help="bandit env the probe histories come from",
    )
    analyze.add_argument(
        "--prefixes", type=int, default=24, help="frequency bias: prefix histories"
    )
    analyze.add_argument(
        "--repetition-step",
        type=int,
        default=5,
        help="frequency bias: target repeated 0, step, 2*step, ... 100 times",
    )
    analyze.add_argument(
        "--histories", type=int, default=64, help="knowing-doing and decision-at-k: histories"
    )
    analyze.add_argument("--budget", type=int, default=256, help="knowing-doing: generation budget")
    analyze.add_argument(
        "--samples",
        type=int,
        help="answers sampled per history: decision-at-k (default 16), knowing-doing (default 1;"
        " more: sampled at temperature 1, with pass@k and maj@k of knowing and of doing)",
    )
    analyze.add_argument(
        "--k",
        help="the k of maj@k, pass@k (and rerank@k), e.g. 1,4,16, each <= --samples "
        "(default: 1,4,16 for decision-at-k; 1 and --samples for knowing-doing)",
    )
    analyze.add_argument(
        "--cot",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="decision-at-k: chain of thought within --budget (default: ACTION= only)",
    )
    analyze.add_argument(
        "--trajectories",
        metavar="RUN",
        help="knowing-doing and decision-at-k: histories are prefixes of the episodes an agent "
        "played in this run directory (or episodes .jsonl) on --env, as the paper probes; "
        "default: random play",
    )
    analyze.add_argument(
        "--agent", help="with --trajectories: the agent whose episodes (label or a unique part)"
    )
    analyze.add_argument("--seed", type=int, default=0)
    analyze.add_argument("--out", required=True, help="analysis directory to write the results to")
    analyze.set_defaults(func=_cmd_analyze)

    report = sub.add_parser("report", help="write a Markdown + HTML failure-mode report")
    report.add_argument("sources", nargs="+", help="run directories and analysis directories")
    report.add_argument("--out", required=True, help="report directory")
    report.add_argument("--title", help="report title")
    report.set_defaults(func=_cmd_report)

    compare = sub.add_parser(
        "compare",
        help="each agent against a reference agent on the seeds both played: means, paired "
        "differences and their confidence intervals",
    )
    compare.add_argument("sources", nargs="+", help="run directories or episodes .jsonl files")
    compare.add_argument(
        "--reference", required=True, help="the reference agent: its label or a unique part of it"
    )
    compare.add_argument(
        "--metrics",
        nargs="+",
        help="metrics to compare (default: all that apply): final_regret coverage "
        "greedy_fraction suffix_failure return win_rate invalid_rate forced_rate",
    )
    compare.add_argument("--out", help="directory to write paired.md and paired.json to")
    compare.set_defaults(func=_cmd_compare)

    export = sub.add_parser(
        "export",
        help="runs as flat tables for pandas and spreadsheets: one row per step, one per episode",
        epilog=_export_columns_epilog(),
    )
    export.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run directories or episodes .jsonl files; the run column holds each as given",
    )
    export.add_argument(
        "--format", choices=FORMATS, default="csv", help="file format (default: csv)"
    )
    export.add_argument(
        "--out",
        default="export",
        help="directory for steps.FORMAT and episodes.FORMAT, replacing earlier ones there "
        "(default: export)",
    )
    export.set_defaults(func=_cmd_export)

    epilog = _training_settings_epilog() if command == "train" else None
    train = sub.add_parser("train", help="RL fine-tune an LLM agent: PPO, expert iteration or "
                           "return-conditioned training (TOML config)", epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    train.add_argument("config", help="TOML config: PPOConfig fields (agentbench/rlft/config.py), "
                       "or method = \"expert-iteration\" / \"return-conditioned\" and that "
                       "method's config fields")  # fmt: skip
    train.add_argument("--out", help="output directory (overrides output_dir); resumes if it "
                       "holds a checkpoint")  # fmt: skip
    train.add_argument(
        "--export", metavar="DIR", help="also write the fine-tuned model as a standalone "
        "model directory (LoRA merged), usable as model = DIR"
    )  # fmt: skip
    train.set_defaults(func=_cmd_train)

    sft = sub.add_parser("sft", help="supervised fine-tuning on UCB expert data "
                         "(behaviour or thought cloning); writes a model directory")  # fmt: skip
    sft.add_argument("--model", help="catalog name or path (default: [model] name's)")
    sft.add_argument("--env", default="agentbench/GaussianBandit-5arms-medium-button-v0",
                     help="bandit env the expert plays")  # fmt: skip
    sft.add_argument("--env-arg", action="append", metavar="KEY=VALUE",
                     help="env keyword argument, e.g. horizon=20 (repeatable)")  # fmt: skip
    sft.add_argument("--mode", choices=["behaviour", "thought"], default="behaviour")
    sft.add_argument("--episodes", type=int, default=16, help="expert episodes (seeds seed..)")
    sft.add_argument("--history-length", default="50", help="transitions in the context, or all")
    if command == "sft":
        from agentbench.rlft.sft import SFTConfig

        _add_config_options(sft, SFTConfig, SFT_CLI_SKIP)
    sft.add_argument("--lora", action="store_true", help="train LoRA adapters, merged on export")
    sft.add_argument("--lora-r", type=int, help="LoRA rank, alpha = 2 r (default: [model]'s)")
    sft.add_argument("--dtype", help="weights dtype: float32 ([model]'s default), bfloat16, auto")
    sft.add_argument("--seed", type=int, default=0, help="first expert seed; shuffling seed")
    sft.add_argument("--out", required=True, help="directory of the fine-tuned model")
    sft.set_defaults(func=_cmd_sft)

    run = sub.add_parser("run", help="run a benchmark suite (resumes into an existing --out)",
                         epilog=_suite_keys_epilog(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    run.add_argument(
        "suite",
        nargs="?",
        help="built-in suite name or TOML file (default: default)",
    )
    run.add_argument(
        "--agent",
        action="append",
        metavar="NAME[,KEY=VALUE...]",
        help="agent and its options, replaces the suite's (repeatable), e.g. "
        "llm,model=smollm2-135m-instruct,answer_forcing=true",
    )
    run.add_argument(
        "--env",
        action="append",
        metavar="ID[,KEY=VALUE...]",
        help="env id and its settings, replaces the suite's (repeatable), e.g. "
        "agentbench/TicTacToe-random-v0,agent_side=O",
    )
    run.add_argument("--episodes", type=int, help="episodes per (agent, env)")
    run.add_argument("--seed", type=int, help="first episode seed")
    run.add_argument("--num-envs", type=int, help="envs played at once (default 64)")
    run.add_argument("--out", help="run directory (default runs/SUITE-TIME); resumes if it exists")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    # Wide tables (one column per agent) should not be cut to 80 columns in a pipe or log.
    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        return args.func(args, console)
    except AgentbenchError as error:
        stderr = Console(stderr=True, soft_wrap=True)
        stderr.print("error:", style="bold red", end=" ")
        stderr.print(str(error), markup=False, highlight=False)  # messages may hold [brackets]
        return 2


if __name__ == "__main__":
    sys.exit(main())
