"""The ``agentbench`` command.

Errors a user can cause (bad id, bad value, bad file) print one line and exit
with status 2; a traceback means a bug in agentbench.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from agentbench.envs import list_envs, make, text_env
from agentbench.errors import AgentbenchError

# Until the suites and agents of the runner exist, `agentbench run` plays one env
# of each family with a uniformly random policy.
DEFAULT_ENVS = (
    "agentbench/GaussianBandit-10arms-medium-button-v0",
    "agentbench/BernoulliBandit-10arms-medium-button-v0",
    "agentbench/ContextualBandit-10arms-v0",
    "agentbench/TicTacToe-random-v0",
)


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


def _play_random(env_id: str, seed: int) -> tuple[float, float]:
    """One episode with a uniformly random legal action: (return, summed regret)."""
    env = make(env_id)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    view = text_env(env)
    total, regret, done = 0.0, 0.0, False
    while not done:
        action = int(rng.choice(view.legal_actions()))
        _, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        regret += float(info.get("regret", 0.0))
        done = terminated or truncated
    env.close()
    return total, regret


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    env_ids = args.env or list(DEFAULT_ENVS)
    seeds = range(args.seed, args.seed + args.episodes)
    table = Table(title=f"uniform random policy, {args.episodes} episodes per env")
    table.add_column("env", no_wrap=True)
    table.add_column("mean return", justify="right")
    table.add_column("mean regret", justify="right")
    for env_id in env_ids:
        results = [
            _play_random(env_id, seed)
            for seed in tqdm(seeds, desc=env_id.split("/")[-1], leave=False)
        ]
        returns, regrets = np.array(results).T
        table.add_row(env_id, f"{returns.mean():.3f}", f"{regrets.mean():.3f}")
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentbench",
        description="A gym and benchmark for LLM agents that make decisions.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    envs = sub.add_parser("envs", help="list the registered environments")
    envs.add_argument("--all", action="store_true", help="include the parametric ids")
    envs.add_argument("--family", choices=["mab", "cb", "tictactoe"], help="only this family")
    envs.set_defaults(func=_cmd_envs)

    run = sub.add_parser("run", help="run the benchmark suite")
    run.add_argument("--env", action="append", help="env id to play (repeatable)")
    run.add_argument("--episodes", type=int, default=64, help="episodes per env (default 64)")
    run.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return args.func(args, console)
    except AgentbenchError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
