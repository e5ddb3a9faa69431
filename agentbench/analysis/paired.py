"""Paired comparisons: each agent against a reference agent on the same seeds.

Before/after questions ("did RL fine-tuning lower regret?") are answered on the
same held-out seeds: the seeds fix the bandit's arms and reward draws, so the
per-seed difference removes the seed-to-seed spread that two unpaired means keep.
For every env, every agent that shares seeds with the reference gets, per metric,
its mean, the reference's mean on the same seeds (Student t intervals; Wilson
intervals for 0/1 metrics: suffix failure, wins) and the mean paired difference
(agent minus reference) with a Student t interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentbench.errors import ConfigError
from agentbench.io import record_dict
from agentbench.metrics import (
    CONFIDENCE,
    Estimate,
    episode_coverage,
    episode_cumulative_regret,
    episode_forced_share,
    episode_greedy_fraction,
    episode_invalid_share,
    episode_suffix_failure,
    group_episodes,
    is_bandit,
    records_regret,
    t_interval,
    wilson_interval,
)
from agentbench.records import Episode


@dataclass(frozen=True)
class EpisodeMetric:
    """A per-episode number and which episodes have it."""

    name: str
    value: Callable[[Episode], float]
    applies: Callable[[Episode], bool]
    binary: bool = False  # 0/1 per episode: means get a Wilson interval


def _bandit(episode: Episode) -> bool:
    return is_bandit([episode])


def _has_regret(episode: Episode) -> bool:
    return records_regret([episode])


def _always(episode: Episode) -> bool:
    return True


EPISODE_METRICS = (
    EpisodeMetric("final_regret", lambda ep: float(episode_cumulative_regret(ep)[-1]), _has_regret),
    EpisodeMetric("coverage", lambda ep: float(episode_coverage(ep)[-1]), _bandit),
    EpisodeMetric("greedy_fraction", episode_greedy_fraction, _bandit),
    EpisodeMetric("suffix_failure", episode_suffix_failure, _bandit, binary=True),
    EpisodeMetric("return", lambda ep: float(ep.total_reward), _always),
    EpisodeMetric(
        "win_rate", lambda ep: float(ep.outcome == "win"), lambda ep: bool(ep.outcome), binary=True
    ),
    EpisodeMetric("invalid_rate", episode_invalid_share, _always),
    EpisodeMetric("forced_rate", episode_forced_share, _always),
)
METRIC_NAMES = tuple(metric.name for metric in EPISODE_METRICS)


@dataclass(frozen=True)
class PairedComparison:
    """One agent against the reference on one env and one metric, over shared seeds."""

    env_id: str
    agent: str
    reference: str
    metric: str
    agent_value: Estimate  # the agent's mean on the shared seeds
    reference_value: Estimate  # the reference's mean on the same seeds
    difference: Estimate  # mean of (agent - reference) per seed

    def to_dict(self) -> dict[str, Any]:
        return record_dict(self)


def find_reference(agents: Sequence[str], reference: str) -> str | None:
    """The agent label ``reference`` names: the exact label, else the one label that
    contains it; None when none does, one clear error when several do."""
    if reference in agents:
        return reference
    matches = [agent for agent in agents if reference in agent]
    if len(matches) > 1:
        raise ConfigError(
            f"reference {reference!r} matches several agents ({', '.join(matches)}); "
            "give the whole label"
        )
    return matches[0] if matches else None


def paired_comparisons(
    episodes: Sequence[Episode],
    reference: str,
    metrics: Sequence[str] = METRIC_NAMES,
    confidence: float = CONFIDENCE,
) -> list[PairedComparison]:
    """Every agent against ``reference`` (a label or a unique part of one), per env
    and metric, on the seeds both played. Envs the reference did not play, metrics that
    do not apply to an env's episodes (regret in tic-tac-toe) and agents without
    shared seeds are left out."""
    unknown = [name for name in metrics if name not in METRIC_NAMES]
    if unknown:
        raise ConfigError(f"unknown metrics {unknown}; choose from {', '.join(METRIC_NAMES)}")
    groups = group_episodes(episodes)
    wanted = [metric for metric in EPISODE_METRICS if metric.name in metrics]
    results = []
    for env_id in sorted({env for _, env in groups}):
        agents = [agent for agent, env in groups if env == env_id]
        base = find_reference(agents, reference)
        if base is None:
            continue
        base_by_seed = {ep.seed: ep for ep in groups[(base, env_id)]}
        for agent in agents:
            if agent == base:
                continue
            mine = {ep.seed: ep for ep in groups[(agent, env_id)]}
            shared = sorted(set(mine) & set(base_by_seed))
            if not shared:
                continue
            for metric in wanted:
                pairs = [(mine[s], base_by_seed[s]) for s in shared]
                if not all(metric.applies(a) and metric.applies(b) for a, b in pairs):
                    continue
                a = np.array([metric.value(ep) for ep, _ in pairs])
                b = np.array([metric.value(ep) for _, ep in pairs])
                if metric.name == "forced_rate" and not (a.any() or b.any()):
                    continue  # neither agent forces answers
                results.append(
                    PairedComparison(
                        env_id,
                        agent,
                        base,
                        metric.name,
                        _mean_interval(a, metric.binary, confidence),
                        _mean_interval(b, metric.binary, confidence),
                        t_interval(a - b, confidence),
                    )
                )
    return results


def _mean_interval(values: np.ndarray, binary: bool, confidence: float) -> Estimate:
    """A t interval, or a Wilson interval for 0/1 values (sound near 0 and 1)."""
    if binary:
        return wilson_interval(int(values.sum()), len(values), confidence)
    return t_interval(values, confidence)


def _estimate_text(estimate: Estimate) -> str:
    if estimate.n < 2 or not np.isfinite(estimate.low):
        return f"{estimate.mean:.3f}"
    return f"{estimate.mean:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def comparisons_markdown(comparisons: Sequence[PairedComparison], confidence: float) -> str:
    """One Markdown table per env: agent, metric, agent, reference, difference (with
    intervals) and the number of paired seeds; a difference whose interval excludes
    zero is marked."""
    lines: list[str] = []
    for env_id in sorted({c.env_id for c in comparisons}):
        rows = [c for c in comparisons if c.env_id == env_id]
        lines += [
            f"### {env_id} (reference: {rows[0].reference})",
            "",
            f"Means with {confidence:.0%} t intervals on the seeds both agents played; "
            "difference = agent - reference per seed (* : the interval excludes 0).",
            "",
            "| agent | metric | agent | reference | difference | seeds |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for c in rows:
            d = c.difference
            excludes = d.n >= 2 and np.isfinite(d.low) and (d.low > 0 or d.high < 0)
            lines.append(
                f"| {c.agent} | {c.metric} | {_estimate_text(c.agent_value)} | "
                f"{_estimate_text(c.reference_value)} | {_estimate_text(d)}"
                f"{' *' if excludes else ''} | {d.n} |"
            )
        lines.append("")
    return "\n".join(lines)
