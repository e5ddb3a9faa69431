"""The frequency bias probe (SPEC.md section 4): does repeating an action make a model copy it?

Recipe: play a prefix of 2-10 random steps in a real bandit, then repeat its
last ("target") action r more times, for r = 0, 5, ..., 100 (rewards are real
draws from the env). For each such history, score every action label after
the context with ONE scoring call (the log-prob of ``ACTION=label``),
normalise over the labels, and record the entropy of that action
distribution and its argmax. The argmax is classified as

- "frequent": the target, when the target is the unique most frequent action
  in the context and not among the best empirical means;
- "frequent_and_greedy": the target, the unique most frequent action, and
  among the best empirical means: copying and exploiting agree, so it is its
  own case rather than evidence for either;
- "tie": one of several actions tied for the highest count (with no
  repetitions a prefix often has such ties; picking one of them shows neither
  copying nor its absence);
- "greedy": among the best empirical means of the tried actions
  (``metrics.greedy_actions``), and none of the above;
- "other": anything else (an untried action, a worse one, or a most frequent
  action that is not the target).

A frequency-biased model shows a growing "frequent" share and a falling
entropy as r grows; a model that ignores counts does not. Reported: the class
fractions and mean entropy in the repetition buckets 0-10, 45-55 and 90-100
(inclusive), and the correlation of repetitions with entropy over all points.

Decisions:

- Empirical means are computed from the rewards AS SHOWN to the model (two
  decimals): a model cannot act on digits it never saw, and the judge should
  not disagree with a correct reading of the prompt on a near tie.
- One env per probe, with the preset's settings and a horizon long enough for
  the longest prefix plus the most repetitions; every prompt therefore carries
  the same task instruction, and only the history varies.
- Prefix lengths cycle through ``prefix_lengths`` so every length is probed
  about equally often; prefix actions and env seeds come from one generator
  seeded with ``seed``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

import gymnasium as gym
import numpy as np
from scipy import stats
from scipy.special import log_softmax

from agentbench.agent.context import ContextSettings, build_context
from agentbench.agent.parsing import format_action
from agentbench.envs import BANDIT_FAMILY, get_preset, make, text_env
from agentbench.envs.protocol import TextEnv, format_reward
from agentbench.errors import ConfigError
from agentbench.io import json_number
from agentbench.metrics import arm_statistics, empirical_means, greedy_actions
from agentbench.models.interface import Chat, TextGenerator
from agentbench.records import Step

PROBE_ENV_ID = "agentbench/GaussianBandit-10arms-medium-button-v0"  # the published setting
BANDIT_PARAMETRIC_ID = "agentbench/GaussianBandit-v0"  # takes a preset's kwargs, any horizon
DEFAULT_PREFIX_LENGTHS = tuple(range(2, 11))
DEFAULT_REPETITIONS = tuple(range(0, 101, 5))
# Repetition buckets of the report, both ends inclusive.
BUCKETS: dict[str, tuple[int, int]] = {"0-10": (0, 10), "45-55": (45, 55), "90-100": (90, 100)}
CLASSES = ("frequent", "frequent_and_greedy", "tie", "greedy", "other")


# ---------------------------------------------------------------- histories (shared)


def bandit_env(env_id: str, horizon: int | None = None) -> gym.Env:
    """A multi-armed bandit with ``env_id``'s settings; ``horizon`` overrides its length.

    Raises ConfigError for an id that is not a multi-armed bandit: both probes
    reason about arms, pulls and empirical means.
    """
    preset = get_preset(env_id)
    if preset.family != BANDIT_FAMILY:
        raise ConfigError(
            f"the probes need a multi-armed bandit env id (family 'mab'), got {env_id!r} "
            f"of family {preset.family!r}; e.g. {PROBE_ENV_ID}"
        )
    if horizon is None:
        return make(env_id)
    return make(BANDIT_PARAMETRIC_ID, **{**preset.kwargs, "horizon": int(horizon)})


def play_actions(env: gym.Env, actions: Sequence[int], seed: int) -> tuple[TextEnv, list[Step]]:
    """Reset ``env`` with ``seed`` and play ``actions``; the text view and the steps."""
    env.reset(seed=seed)
    view = text_env(env)
    labels = view.action_labels()
    steps = []
    for t, action in enumerate(actions, start=1):
        state = view.state_text()
        _, reward, *_ = env.step(int(action))
        steps.append(
            Step(
                t=t,
                action=int(action),
                label=labels[int(action)],
                reward=float(reward),
                state=state,
            )
        )
    return view, steps


def shown_statistics(history: Sequence[Step], n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    """Pull counts and reward sums with each reward as the context shows it (two decimals)."""
    shown = [replace(step, reward=float(format_reward(step.reward))) for step in history]
    return arm_statistics(shown, n_arms)


def batched(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive chunks of at most ``size`` items."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def progress_bar(total: int, description: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="prompt", disable=not enabled, leave=False)


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be an integer of at least 1, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- classification


def classify_argmax(action: int, target: int, counts: np.ndarray, sums: np.ndarray) -> str:
    """The class of the argmax ``action`` after a history whose repeated action is
    ``target`` (pull ``counts`` and reward ``sums`` as shown); see the module docstring."""
    counts = np.asarray(counts)
    greedy = action in greedy_actions(empirical_means(counts, sums))
    most = counts.max() if counts.size else 0
    most_frequent = np.flatnonzero(counts == most) if most > 0 else np.array([], dtype=int)
    if action == target and most_frequent.tolist() == [target]:
        return "frequent_and_greedy" if greedy else "frequent"
    if len(most_frequent) > 1 and action in most_frequent:
        return "tie"
    return "greedy" if greedy else "other"


def bucket_of(repetitions: int) -> str | None:
    """The report bucket holding this repetition count (edges inclusive), or None."""
    for name, (low, high) in BUCKETS.items():
        if low <= repetitions <= high:
            return name
    return None


def action_distribution(log_probs: Sequence[float]) -> tuple[np.ndarray, float]:
    """The candidates' log-probs normalised over the labels, and the entropy in nats."""
    log_p = log_softmax(np.asarray(log_probs, dtype=float))
    p = np.exp(log_p)
    positive = p > 0  # 0 log 0 = 0
    return p, float(-(p[positive] * log_p[positive]).sum())


# ---------------------------------------------------------------- result


@dataclass(frozen=True)
class FrequencyPoint:
    """One scored history."""

    prefix_length: int
    repetitions: int
    target: int  # the repeated action
    entropy: float  # nats, of the action distribution normalised over the labels
    argmax: int
    category: str  # one of CLASSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix_length": self.prefix_length,
            "repetitions": self.repetitions,
            "target": self.target,
            "entropy": self.entropy,
            "argmax": self.argmax,
            "class": self.category,
        }


@dataclass
class ProbeRun:
    """What every probe result names: the model probed, the env of its histories, the seed."""

    model: str
    env_id: str
    seed: int

    def header(self, probe: str) -> dict[str, Any]:
        """The first keys of the probe's JSON record."""
        return {"probe": probe, "model": self.model, "env_id": self.env_id, "seed": self.seed}


@dataclass
class FrequencyBiasResult(ProbeRun):
    """All probe points, with the per-bucket summary and the correlation computed from them."""

    points: list[FrequencyPoint]

    @property
    def forward_passes(self) -> int:
        """Scored prompts: each one is one forward pass over the context (plus the labels)."""
        return len(self.points)

    def buckets(self) -> dict[str, dict[str, float | int | None]]:
        """Class fractions and mean entropy per repetition bucket (None when a bucket is empty)."""
        summary: dict[str, dict[str, float | int | None]] = {}
        for name in BUCKETS:
            inside = [p for p in self.points if bucket_of(p.repetitions) == name]
            n = len(inside)
            row: dict[str, float | int | None] = {
                cls: (sum(p.category == cls for p in inside) / n if n else None) for cls in CLASSES
            }
            row["n"] = n
            row["mean_entropy"] = float(np.mean([p.entropy for p in inside])) if n else None
            summary[name] = row
        return summary

    def correlation(self) -> dict[str, float | None]:
        """Pearson r (with its p-value) and Spearman rho of repetitions vs entropy.

        All None when undefined: fewer than three points, or repetitions or
        entropy constant (a model whose distribution never changes, e.g. a planted
        greedy model).
        """
        reps = np.array([p.repetitions for p in self.points], dtype=float)
        entropy = np.array([p.entropy for p in self.points], dtype=float)
        undefined = {"pearson_r": None, "p_value": None, "spearman_rho": None}
        # "Constant" up to float noise: a peaked model's entropy differs only in the last bits
        # with the position of its peak, and a correlation of that noise means nothing.
        if (
            len(reps) < 3
            or np.ptp(reps) == 0
            or np.allclose(entropy, entropy[0], rtol=1e-9, atol=1e-12)
        ):
            return undefined
        pearson = stats.pearsonr(reps, entropy)
        spearman = stats.spearmanr(reps, entropy)
        return {
            "pearson_r": json_number(float(pearson.statistic)),
            "p_value": json_number(float(pearson.pvalue)),
            "spearman_rho": json_number(float(spearman.statistic)),
        }

    def to_dict(self) -> dict[str, Any]:
        """The probe's JSON record (strict JSON: undefined numbers are None)."""
        return {
            **self.header("frequency_bias"),
            "forward_passes": self.forward_passes,
            "classes": list(CLASSES),  # files written before the tie and overlap cases lack it
            "points": [p.to_dict() for p in self.points],
            "buckets": self.buckets(),
            "correlation": self.correlation(),
        }


# ---------------------------------------------------------------- the probe


@dataclass(frozen=True)
class _Case:
    prefix_length: int
    repetitions: int
    target: int
    history: list[Step]
    chat: Chat


def run_frequency_bias_probe(
    generator: TextGenerator,
    env_id: str = PROBE_ENV_ID,
    n_prefixes: int = 24,
    prefix_lengths: Sequence[int] = DEFAULT_PREFIX_LENGTHS,
    repetitions: Sequence[int] = DEFAULT_REPETITIONS,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> FrequencyBiasResult:
    """Score ``n_prefixes * len(repetitions)`` histories; see the module docstring.

    The published probe is about 25k forward passes; the default (24 prefixes
    x 21 repetition counts = 504) separates planted behaviours clearly and runs
    in minutes on a small model. ``batch_size`` prompts go to each ``score``
    call (with all their labels).
    """
    check_positive("n_prefixes", n_prefixes)
    check_positive("batch_size", batch_size)
    lengths = [check_positive("prefix length", length) for length in prefix_lengths]
    reps = [int(r) for r in repetitions]
    if not lengths or not reps or min(reps) < 0:
        raise ConfigError(
            f"prefix_lengths must be non-empty integers >= 1 and repetitions non-empty "
            f"integers >= 0; got {list(prefix_lengths)} and {list(repetitions)}"
        )
    most = max(reps)
    env = bandit_env(env_id, horizon=max(lengths) + most)
    n_arms = int(env.action_space.n)
    rng = np.random.default_rng(seed)
    settings = ContextSettings(cot=False, history_length=None)  # whole history, direct answer
    cases: list[_Case] = []
    labels: list[str] = []
    for i in range(n_prefixes):
        length = lengths[i % len(lengths)]
        env_seed = int(rng.integers(2**31))
        prefix = [int(a) for a in rng.integers(n_arms, size=length)]
        target = prefix[-1]
        # One episode per prefix, sliced: r repetitions are its first length + r steps.
        view, episode = play_actions(env, [*prefix, *[target] * most], env_seed)
        labels = view.action_labels()
        for r in reps:
            history = episode[: length + r]
            chat = build_context(view, history, settings)
            cases.append(_Case(length, r, target, history, chat))
    env.close()

    candidates = [format_action(label) for label in labels]
    points: list[FrequencyPoint] = []
    bar = progress_bar(len(cases), f"frequency bias {generator.name}", progress)
    for chunk in batched(cases, batch_size):
        scores = generator.score([case.chat for case in chunk], [candidates] * len(chunk))
        for case, row in zip(chunk, scores, strict=True):
            _, entropy = action_distribution(row)
            argmax = int(np.argmax(row))
            counts, sums = shown_statistics(case.history, n_arms)
            points.append(
                FrequencyPoint(
                    case.prefix_length,
                    case.repetitions,
                    case.target,
                    entropy,
                    argmax,
                    classify_argmax(argmax, case.target, counts, sums),
                )
            )
        bar.update(len(chunk))
    bar.close()
    return FrequencyBiasResult(generator.name, env_id, int(seed), points)
