"""Greediness analysis of recorded runs (SPEC.md section 4), from Episode records only.

Per (run, agent, env) group it gathers what shows an agent exploiting too early:
the coverage and cumulative-regret curves with 95% intervals, the greedy
fraction, suffix failure and K x MinFrac (all from :mod:`agentbench.metrics`,
never recomputed here), and the share of steps spent on each action.

Two comparisons go beyond one group:

- Paired regret against UCB and random: the bandits draw their rewards from the
  seed (common random numbers), so an agent's episode and a baseline's episode
  on the same env and seed saw the same draws. The per-seed difference of final
  regrets removes the seed-to-seed spread that unpaired means keep, and is taken
  on the seeds both played, nothing else. The baseline comes from the agent's
  own run when it holds one, else from the first other run given that does.
- Chain of thought and generation budget: LLM agents are recorded under labels
  such as ``llm(model=smollm2-135m-instruct,budget=32)`` (see
  :func:`agentbench.suite.agent_label`). Agents of one model on one env that
  differ only in ``cot`` / ``budget`` form a small table of the settings' effect.

Several runs (e.g. before and after fine-tuning) are analysed together but kept
apart: every group carries the label of the run it came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentbench.agent.llm import DIRECT_BUDGET
from agentbench.io import record_dict
from agentbench.metrics import (
    CONFIDENCE,
    Estimate,
    episode_cumulative_regret,
    group_episodes,
    summarize_run,
    t_interval,
)
from agentbench.records import Episode

# The reference agents of the paired regret comparison, by agent name.
REFERENCE_AGENTS = ("ucb", "random")
# The LLM settings whose effect the settings table shows; other settings must match.
VARIED_SETTINGS = ("cot", "budget")
# Per-group metrics the greediness summary reads from a metrics row (summarize_run).
GREEDINESS_METRICS = (
    "coverage",
    "greedy_fraction",
    "suffix_failure",
    "k_minfrac",
    "final_regret",
    "invalid_rate",
)
# Metrics of the settings-effect table.
SETTINGS_METRICS = ("coverage", "final_regret", "invalid_rate", "greedy_fraction", "return")


# ---------------------------------------------------------------- agent labels

_LABEL = re.compile(r"(?P<name>[^()]+?)(?:\((?P<settings>.*)\))?")
_SETTING_SPLIT = re.compile(r",(?=[A-Za-z_][A-Za-z0-9_]*=)")  # commas that start a new key=


def parse_agent_label(label: str) -> tuple[str, dict[str, str]]:
    """An agent label's name and its ``key=value`` settings, as :func:`agent_label` writes them.

    A label that does not have that shape (a custom name) is all name, without settings.
    Values are split only at commas followed by ``key=``, so a value may hold a comma.
    """
    match = _LABEL.fullmatch(label)
    if match is None:
        return label, {}
    settings: dict[str, str] = {}
    if match["settings"]:
        for part in _SETTING_SPLIT.split(match["settings"]):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                return label, {}
            settings[key.strip()] = value.strip()
    return match["name"].strip(), settings


def agent_name(label: str) -> str:
    """The agent's name without its settings: ``ucb(c=1)`` -> ``ucb``."""
    return parse_agent_label(label)[0]


@dataclass(frozen=True)
class LLMSetting:
    """Model, chain of thought and budget of an LLM agent label; ``other`` holds the rest."""

    model: str
    cot: bool
    budget: int
    other: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        """How a row of the settings table names this setting.

        Without CoT the agent answers ``ACTION=X`` within a fixed budget whatever
        the label's ``budget``, so the row says so rather than show a budget not used.
        """
        if not self.cot:
            return f"cot=False (direct answer, {DIRECT_BUDGET} tokens)"
        return f"cot=True, budget={self.budget}"


_SETTING_KEYS = ("model", "cot", "budget")


def llm_setting(agent_settings: dict[str, Any]) -> LLMSetting | None:
    """The LLM setting an episode record's ``agent_settings`` holds (model, cot, budget
    and the rest); None for other agents and for records written before agentbench
    recorded the settings, rather than a guess from the label."""
    if any(key not in agent_settings for key in _SETTING_KEYS):
        return None
    other = tuple(sorted((key, str(value)) for key, value in agent_settings.items()
                         if key not in _SETTING_KEYS))  # fmt: skip
    return LLMSetting(
        str(agent_settings["model"]),
        bool(agent_settings["cot"]),
        int(agent_settings["budget"]),
        other,
    )


# ---------------------------------------------------------------- results


@dataclass
class GroupGreediness:
    """One agent on one env in one run: its metrics row and where its actions went."""

    source: str  # label of the run the episodes came from
    agent: str
    env_id: str
    metrics: dict[str, Any]  # the summarize_run row (estimates and curves)
    action_labels: list[str]
    action_counts: list[int]  # executed actions per action index, over all steps
    final_regrets: dict[int, float] = field(default_factory=dict)  # seed -> final regret
    agent_settings: dict[str, Any] = field(default_factory=dict)  # as the records hold them

    @property
    def family(self) -> str:
        return str(self.metrics.get("family", ""))

    @property
    def is_bandit(self) -> bool:
        """Bandit groups record optimal actions, so coverage and the greedy metrics apply."""
        return "coverage" in self.metrics

    @property
    def action_shares(self) -> dict[str, float]:
        """Share of all steps on each action label (all zero for a group without steps)."""
        total = sum(self.action_counts)
        return {
            label: (count / total if total else 0.0)
            for label, count in zip(self.action_labels, self.action_counts, strict=True)
        }

    def to_dict(self) -> dict[str, Any]:
        row = {"source": self.source, **self.metrics}
        row["action_histogram"] = {
            "labels": list(self.action_labels),
            "counts": list(self.action_counts),
            "shares": list(self.action_shares.values()),
        }
        return row


@dataclass
class PairedRegret:
    """Final regret of an agent minus a reference agent's, on the seeds both played."""

    source: str
    agent: str
    env_id: str
    reference: str  # "ucb" or "random"
    reference_source: str  # the run the reference episodes came from
    reference_agent: str  # its exact label
    shared_seeds: list[int]
    agent_seeds: int  # seeds the agent played (shared or not)
    reference_seeds: int
    difference: Estimate  # agent minus reference, t interval over shared seeds
    agent_regret: Estimate  # the agent's final regret on the shared seeds
    reference_regret: Estimate

    def to_dict(self) -> dict[str, Any]:
        return record_dict(self, n_shared=len(self.shared_seeds))


@dataclass
class SettingsEffect:
    """One model on one env under at least two chain-of-thought / budget settings."""

    model: str
    env_id: str
    other_settings: dict[str, str]  # settings shared by every row (not varied)
    rows: list[dict[str, Any]]  # source, agent, cot, budget, n_episodes, metric estimates

    def to_dict(self) -> dict[str, Any]:
        return record_dict(self)


@dataclass
class GreedinessAnalysis:
    """Everything the greediness analysis found in one or more runs."""

    sources: list[str]
    groups: list[GroupGreediness]
    paired_regret: list[PairedRegret]
    settings_effects: list[SettingsEffect]
    confidence: float = CONFIDENCE

    def metrics_rows(self, source: str) -> list[dict[str, Any]]:
        """The summarize_run rows of one run (what agentbench.tables reads)."""
        return [group.metrics for group in self.groups if group.source == source]

    def to_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "sources": list(self.sources),
            "groups": [group.to_dict() for group in self.groups],
            "paired_regret": [pair.to_dict() for pair in self.paired_regret],
            "settings_effects": [effect.to_dict() for effect in self.settings_effects],
        }


# ---------------------------------------------------------------- analysis


def analyse_runs(
    runs: Mapping[str, Sequence[Episode]], confidence: float = CONFIDENCE
) -> GreedinessAnalysis:
    """Analyse several runs (run label -> its episodes) together, keeping their agents apart."""
    groups: list[GroupGreediness] = []
    for source, episodes in runs.items():
        by_pair = group_episodes(episodes)
        for row in summarize_run(episodes, confidence):
            group = by_pair[(row["agent"], row["env_id"])]
            groups.append(_group(source, row, group))
    return GreedinessAnalysis(
        sources=list(runs),
        groups=groups,
        paired_regret=paired_regret(groups, list(runs), confidence),
        settings_effects=settings_effects(groups),
        confidence=confidence,
    )


def analyse_episodes(
    episodes: Sequence[Episode], source: str = "", confidence: float = CONFIDENCE
) -> GreedinessAnalysis:
    """Analyse the episodes of one run."""
    return analyse_runs({source: episodes}, confidence)


def _group(source: str, row: dict[str, Any], episodes: Sequence[Episode]) -> GroupGreediness:
    n_actions = max(ep.n_actions for ep in episodes)
    counts = np.zeros(n_actions, dtype=np.int64)
    for episode in episodes:
        counts += np.bincount([s.action for s in episode.steps], minlength=n_actions)[:n_actions]
    labels = list(max(episodes, key=lambda ep: ep.n_actions).action_labels)
    finals = {}
    if "final_regret" in row:  # every step records a regret (bandits)
        finals = {ep.seed: float(episode_cumulative_regret(ep)[-1]) for ep in episodes if ep.steps}
    # the settings all of the group's episodes record (none if they disagree)
    settings = episodes[0].agent_settings
    if any(episode.agent_settings != settings for episode in episodes):
        settings = {}
    return GroupGreediness(
        source,
        row["agent"],
        row["env_id"],
        row,
        labels,
        [int(c) for c in counts],
        finals,
        dict(settings),
    )


def paired_regret(
    groups: Sequence[GroupGreediness], sources: Sequence[str], confidence: float = CONFIDENCE
) -> list[PairedRegret]:
    """Each non-reference agent's final regret minus UCB's and random's, paired by seed.

    The reference is looked up on the same env in the agent's own run first,
    then in the other runs in the order given; among several labels of a
    reference (``ucb``, ``ucb(c=1)``) the bare name wins.
    """
    regret_groups = [group for group in groups if group.final_regrets]
    results = []
    for group in regret_groups:
        if agent_name(group.agent) in REFERENCE_AGENTS:
            continue
        for reference in REFERENCE_AGENTS:
            found = _find_reference(regret_groups, group, reference, sources)
            if found is None:
                continue
            shared = sorted(set(group.final_regrets) & set(found.final_regrets))
            if not shared:
                continue
            mine = [group.final_regrets[seed] for seed in shared]
            theirs = [found.final_regrets[seed] for seed in shared]
            results.append(
                PairedRegret(
                    source=group.source,
                    agent=group.agent,
                    env_id=group.env_id,
                    reference=reference,
                    reference_source=found.source,
                    reference_agent=found.agent,
                    shared_seeds=shared,
                    agent_seeds=len(group.final_regrets),
                    reference_seeds=len(found.final_regrets),
                    difference=t_interval(np.subtract(mine, theirs), confidence),
                    agent_regret=t_interval(mine, confidence),
                    reference_regret=t_interval(theirs, confidence),
                )
            )
    return results


def _find_reference(
    groups: Sequence[GroupGreediness],
    group: GroupGreediness,
    reference: str,
    sources: Sequence[str],
) -> GroupGreediness | None:
    order = [group.source] + [source for source in sources if source != group.source]
    for source in order:
        candidates = [
            g
            for g in groups
            if g.source == source and g.env_id == group.env_id and agent_name(g.agent) == reference
        ]
        if candidates:
            return min(candidates, key=lambda g: (g.agent != reference, g.agent))
    return None


def settings_effects(groups: Sequence[GroupGreediness]) -> list[SettingsEffect]:
    """Tables of LLM agents of one model on one env that differ only in cot / budget.

    Only (model, env, other settings) with at least two distinct (cot, budget)
    settings make a table; rows are sorted by (cot, budget) and then by run.
    """
    tables: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[tuple[LLMSetting, Any]]] = {}
    for group in groups:
        setting = llm_setting(group.agent_settings)
        if setting is not None:
            key = (setting.model, group.env_id, setting.other)
            tables.setdefault(key, []).append((setting, group))
    effects = []
    for (model, env_id, other), members in tables.items():
        if len({(s.cot, s.budget) for s, _ in members}) < 2:
            continue
        members.sort(key=lambda member: (member[0].cot, member[0].budget, member[1].source))
        rows = []
        for setting, group in members:
            row: dict[str, Any] = {
                "source": group.source,
                "agent": group.agent,
                "setting": setting.text,
                "cot": setting.cot,
                "budget": setting.budget,
                "n_episodes": group.metrics["n_episodes"],
            }
            row.update({name: group.metrics.get(name) for name in SETTINGS_METRICS})
            rows.append(row)
        effects.append(SettingsEffect(model, env_id, dict(other), rows))
    return effects


def estimate_mean(estimate: dict[str, Any] | None) -> float:
    """The mean of an estimate dict (``to_dict`` form), NaN when absent or undefined."""
    if not estimate or estimate.get("mean") is None:
        return math.nan
    return float(estimate["mean"])
