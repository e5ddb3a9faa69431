"""Metrics of SPEC section 4, computed from Episode records only.

Nothing here needs a model or an env: a run's JSONL file is enough, so a run can
be analysed again later. Every metric is a per-episode value first (one number,
or one number per step), then a mean over episodes with a confidence interval
over episodes: a Student t interval for continuous values, a Wilson interval for
per-episode yes/no values (suffix failure, win / draw / loss).

Definitional choices (each one documented where it is computed):

- The action of a step is the action the env *executed* (``Step.action``), not
  what the agent proposed: after an invalid answer the env plays a random
  legal action, and that is the action the environment (and regret) saw.
- Greedy fraction: a step counts as greedy when its action has the highest
  empirical mean among the actions tried on the *earlier* steps of the episode
  (ties, up to float rounding, all count as greedy). Steps before any action was
  tried (the first step) are left out of the denominator. The means ignore
  contexts, also for contextual bandits.
- Suffix failure with horizon T (the episode's length): the suffix is the
  1-based steps ``floor(T/2)+1 .. T`` (26..50 for T = 50). The episode fails
  when no suffix step chose that step's optimal action. For a multi-armed
  bandit the optimal action is constant, so this is "the best arm is never
  pulled in the second half"; for a contextual bandit it is "the suffix never
  hit the per-step optimal action".
- Rates over steps (invalid, illegal, greedy) are per-episode shares first,
  then averaged, so every episode weighs the same whatever its length.
- Per-step curves over ragged episodes (tic-tac-toe) carry a finished
  episode's last value forward: a cumulative quantity does not change once the
  episode is over, every step averages all episodes, and the last point of a
  curve equals the mean of the final values. ``Curve.running`` counts the
  episodes still running at each step.
- With one value the t interval has no spread to estimate: ``low`` and ``high``
  are NaN (``None`` in ``to_dict``). Wilson intervals exist from one episode on.
  With no values the mean is NaN too and ``n`` is 0. Episodes whose value is
  undefined (no steps; greedy fraction without an eligible step) are left out,
  and ``n`` says how many episodes counted.
- Which metrics apply is read from the records, not from env names: regret
  metrics when every step records a regret, bandit metrics when every step
  records an optimal action, outcome rates when an episode records an outcome.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from agentbench.errors import ConfigError
from agentbench.io import json_number
from agentbench.records import Episode, Step

CONFIDENCE = 0.95  # level of every interval unless a caller asks for another
OUTCOMES = ("win", "draw", "loss")  # tic-tac-toe outcomes, as the env records them


@dataclass(frozen=True)
class Estimate:
    """A mean over episodes with its confidence interval and the episode count behind it."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "mean": json_number(self.mean),
            "low": json_number(self.low),
            "high": json_number(self.high),
            "n": self.n,
        }


@dataclass(frozen=True)
class Curve:
    """A per-step mean over episodes with a per-step interval (index 0 is step 1)."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    running: np.ndarray  # episodes still running at each step
    n: int  # episodes behind every step (finished ones carry their last value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": [json_number(v) for v in self.mean],
            "low": [json_number(v) for v in self.low],
            "high": [json_number(v) for v in self.high],
            "running": [int(v) for v in self.running],
            "n": self.n,
        }


# ---------------------------------------------------------------- intervals


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``c`` correct of ``n`` samples (1 <= k <= n):
    1 - C(n - c, k) / C(n, k) (Chen et al., 2021; SPEC.md 5)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ConfigError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k) as a product, exact for any n without huge integers
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student t interval of per-episode values (NaN values are left out)."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    n = int(data.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    # Computed by hand rather than stats.t.interval: zero spread gives [mean, mean], not NaN.
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * data.std(ddof=1) / math.sqrt(n))
    return Estimate(mean, mean - half, mean + half, n)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """Share of successes with the Wilson score interval, sound near 0 and 1 and for small n."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    z = float(stats.norm.ppf((1 + confidence) / 2))
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def _binary_estimate(flags: Sequence[float], confidence: float) -> Estimate:
    """Wilson estimate of per-episode 0/1 values (NaN: undefined, left out)."""
    defined = [flag for flag in flags if not math.isnan(flag)]
    return wilson_interval(int(sum(defined)), len(defined), confidence)


def step_curve(per_episode: Sequence[np.ndarray], confidence: float = CONFIDENCE) -> Curve:
    """Per-step mean and t interval of per-step episode values of possibly different lengths.

    A finished episode keeps its last value on later steps (see the module
    docstring); an episode without steps takes no part.
    """
    rows = [np.asarray(row, dtype=float) for row in per_episode if len(row) > 0]
    length = max((row.size for row in rows), default=0)
    table = np.array([np.pad(row, (0, length - row.size), mode="edge") for row in rows])
    estimates = [t_interval(table[:, step], confidence) for step in range(length)]
    running = np.array([sum(row.size > step for row in rows) for step in range(length)], dtype=int)
    return Curve(
        mean=np.array([e.mean for e in estimates]),
        low=np.array([e.low for e in estimates]),
        high=np.array([e.high for e in estimates]),
        running=running,
        n=len(rows),
    )


# ---------------------------------------------------------------- per-episode values


def episode_cumulative_regret(episode: Episode) -> np.ndarray:
    """Cumulative expected regret after each step (bandits record a regret per step)."""
    regrets = [step.regret for step in episode.steps]
    if any(regret is None for regret in regrets):
        raise ConfigError(
            f"episode {episode.key} records no regret on some steps; "
            "regret applies to bandit episodes only"
        )
    return np.cumsum(np.asarray(regrets, dtype=float))


def episode_cumulative_return(episode: Episode) -> np.ndarray:
    """Cumulative env reward after each step (shaping rewards excluded)."""
    return np.cumsum(np.asarray([step.reward for step in episode.steps], dtype=float))


def episode_coverage(episode: Episode) -> np.ndarray:
    """C_t = |{a : N_t(a) > 0}| / K after each step t, counting executed actions."""
    tried = np.zeros(episode.n_actions, dtype=bool)
    coverage = np.empty(len(episode.steps))
    for index, step in enumerate(episode.steps):
        tried[step.action] = True
        coverage[index] = tried.sum() / episode.n_actions
    return coverage


def arm_statistics(history: Sequence[Step], n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    """Pull counts (int64) and reward sums (float64) per arm over ``history``.

    Uses the executed action of each step (``Step.action``), which is what the
    env paid for, even when the agent's own answer was invalid. The baselines
    and the analysers share this (and :func:`empirical_means`).
    """
    n = len(history)
    actions = np.fromiter((step.action for step in history), dtype=np.int64, count=n)
    rewards = np.fromiter((step.reward for step in history), dtype=np.float64, count=n)
    counts = np.bincount(actions, minlength=n_arms)
    sums = np.bincount(actions, weights=rewards, minlength=n_arms)
    return counts, sums


def empirical_means(counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Mean reward per arm; NaN for arms never pulled (no estimate, not zero)."""
    counts = np.asarray(counts)
    means = np.full(counts.shape, np.nan)
    tried = counts > 0
    means[tried] = np.asarray(sums)[tried] / counts[tried]
    return means


def greedy_actions(means: np.ndarray) -> set[int]:
    """Tried actions whose empirical mean is the highest (ties up to float rounding all count).

    ``means`` is NaN for untried actions, as :func:`empirical_means` returns it.
    """
    tried = ~np.isnan(means)
    if not tried.any():
        return set()
    best = np.nanmax(means)
    return {int(a) for a in np.flatnonzero(tried & np.isclose(means, best, rtol=1e-9, atol=1e-12))}


def episode_greedy_fraction(episode: Episode) -> float:
    """Share of steps whose action was greedy with respect to the earlier steps.

    Steps before any action was tried are left out (only the first); NaN when no
    step is left. Vectorised over steps: cumulative counts and sums before each
    step, then :func:`greedy_actions`' test (tried, and tied with the best mean).
    """
    n_steps = len(episode.steps)
    if n_steps < 2:
        return math.nan
    actions = np.array([step.action for step in episode.steps])
    rewards = np.array([step.reward for step in episode.steps], dtype=float)
    pulls = np.zeros((n_steps, episode.n_actions))
    pulls[np.arange(n_steps), actions] = 1.0
    counts = np.cumsum(pulls, axis=0)[:-1]  # row i: before step i + 2
    sums = np.cumsum(pulls * rewards[:, None], axis=0)[:-1]
    means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    rows, chosen = np.arange(n_steps - 1), actions[1:]
    best = means.max(axis=1)
    greedy = (counts[rows, chosen] > 0) & np.isclose(
        means[rows, chosen], best, rtol=1e-9, atol=1e-12
    )
    return float(greedy.mean())


def suffix_start(horizon: int) -> int:
    """First 1-based step of the suffix of a horizon-T episode: floor(T/2) + 1."""
    return horizon // 2 + 1


def episode_suffix_failure(episode: Episode) -> float:
    """1.0 when no step of the suffix floor(T/2)+1..T chose that step's optimal action.

    NaN for an episode without steps. Raises when optimal actions are not recorded.
    """
    horizon = len(episode.steps)
    if horizon == 0:
        return math.nan
    suffix = episode.steps[suffix_start(horizon) - 1 :]
    if any(step.optimal_action is None for step in suffix):
        raise ConfigError(
            f"episode {episode.key} records no optimal action on some steps; "
            "suffix failure applies to bandit episodes only"
        )
    return float(not any(step.action == step.optimal_action for step in suffix))


def episode_k_minfrac(episode: Episode) -> float:
    """K * min over arms of (pulls of the arm / T); 1 for perfectly even pulls, 0 if one arm is
    never pulled. NaN for an episode without steps."""
    horizon = len(episode.steps)
    if horizon == 0:
        return math.nan
    counts, _ = arm_statistics(episode.steps, episode.n_actions)
    return float(episode.n_actions * counts.min() / horizon)


def _share(episode: Episode, holds: Callable[[Step], bool]) -> float:
    """Share of the episode's steps for which ``holds`` is true (NaN without steps)."""
    if not episode.steps:
        return math.nan
    return sum(bool(holds(step)) for step in episode.steps) / len(episode.steps)


# ---------------------------------------------------------------- metrics over episodes


def regret_curve(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Curve:
    """Mean cumulative expected regret per step."""
    return step_curve([episode_cumulative_regret(ep) for ep in episodes], confidence)


def final_regret(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Estimate:
    """Mean cumulative expected regret at the end of the episode."""
    finals = [episode_cumulative_regret(ep)[-1] for ep in episodes if ep.steps]
    return t_interval(finals, confidence)


def coverage_curve(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Curve:
    """Mean action coverage C_t per step."""
    return step_curve([episode_coverage(ep) for ep in episodes], confidence)


def final_coverage(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Estimate:
    """Mean action coverage after the last step."""
    return t_interval([episode_coverage(ep)[-1] for ep in episodes if ep.steps], confidence)


def greedy_fraction(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Estimate:
    """Mean per-episode share of greedy steps (see :func:`episode_greedy_fraction`)."""
    return t_interval([episode_greedy_fraction(ep) for ep in episodes], confidence)


def suffix_failure(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Estimate:
    """Share of episodes whose second half never chose the optimal action (Wilson interval)."""
    return _binary_estimate([episode_suffix_failure(ep) for ep in episodes], confidence)


def k_minfrac(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Estimate:
    """Mean K * MinFrac: how evenly the least-pulled arm was explored."""
    return t_interval([episode_k_minfrac(ep) for ep in episodes], confidence)


def is_invalid(step: Step) -> bool:
    """The step's answer named no legal action and the random fallback played
    (``valid`` false, not forced). Valid, forced and invalid steps partition every
    episode."""
    return not step.valid and not step.forced


def episode_invalid_share(episode: Episode) -> float:
    """Share of the episode's steps that are invalid (:func:`is_invalid`)."""
    return _share(episode, is_invalid)


def episode_forced_share(episode: Episode) -> float:
    """Share of the episode's steps whose action answer forcing chose (the answer named
    no legal action; the model's scores over the legal labels picked one)."""
    return _share(episode, lambda step: step.forced)


def invalid_rate(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Estimate:
    """Mean per-episode share of invalid steps (:func:`episode_invalid_share`)."""
    return t_interval([episode_invalid_share(ep) for ep in episodes], confidence)


def forced_rate(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Estimate:
    """Mean per-episode share of forced steps (:func:`episode_forced_share`)."""
    return t_interval([episode_forced_share(ep) for ep in episodes], confidence)


def illegal_rate(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Estimate:
    """Mean per-episode share of steps the env judged illegal moves (tic-tac-toe)."""
    return t_interval([_share(ep, lambda step: step.illegal) for ep in episodes], confidence)


def mean_return(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Estimate:
    """Mean episode return: the sum of env rewards (shaping excluded)."""
    return t_interval([ep.total_reward for ep in episodes], confidence)


def return_curve(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> Curve:
    """Mean cumulative env reward per step."""
    return step_curve([episode_cumulative_return(ep) for ep in episodes], confidence)


def outcome_rates(
    episodes: Sequence[Episode], confidence: float = CONFIDENCE
) -> dict[str, Estimate]:
    """Win / draw / loss shares with Wilson intervals.

    Every episode is in the denominator: one without a recorded outcome (a game
    cut short) is none of the three, so the rates then sum to less than one.
    """
    return {
        outcome: wilson_interval(
            sum(ep.outcome == outcome for ep in episodes), len(episodes), confidence
        )
        for outcome in OUTCOMES
    }


# ---------------------------------------------------------------- summaries


def records_regret(episodes: Sequence[Episode]) -> bool:
    """Whether every step of these episodes records a regret (bandits)."""
    steps = [step for ep in episodes for step in ep.steps]
    return bool(steps) and all(step.regret is not None for step in steps)


def is_bandit(episodes: Sequence[Episode]) -> bool:
    """Whether every step of these episodes records the optimal action (bandits)."""
    steps = [step for ep in episodes for step in ep.steps]
    return bool(steps) and all(step.optimal_action is not None for step in steps)


def _records_outcome(episodes: Sequence[Episode]) -> bool:
    return any(ep.outcome is not None for ep in episodes)


def summarize(episodes: Sequence[Episode], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The metrics that apply to these episodes, as plain JSON-able values.

    Always: ``n_episodes``, ``confidence``, ``return``, ``invalid_rate``,
    ``illegal_rate`` and ``curves["return"]``; ``forced_rate`` when the agent forced
    answers (or any step was forced). Bandits add ``final_regret``,
    ``coverage`` (final coverage), ``greedy_fraction``, ``suffix_failure``,
    ``k_minfrac`` and ``curves["regret"]``, ``curves["coverage"]``. Episodes
    with outcomes (tic-tac-toe) add ``win_rate``, ``draw_rate``, ``loss_rate``.
    Estimates are ``{"mean", "low", "high", "n"}`` with NaN written as None.
    No episodes: only the counts and an empty ``curves``.
    """
    summary: dict[str, Any] = {"n_episodes": len(episodes), "confidence": confidence}
    curves: dict[str, Any] = {}
    if not episodes:
        summary["curves"] = curves
        return summary
    estimates: dict[str, Estimate] = {
        "return": mean_return(episodes, confidence),
        "invalid_rate": invalid_rate(episodes, confidence),
        "illegal_rate": illegal_rate(episodes, confidence),
    }
    if any(ep.agent_settings.get("answer_forcing") for ep in episodes) or any(
        step.forced for ep in episodes for step in ep.steps
    ):
        estimates["forced_rate"] = forced_rate(episodes, confidence)
    curves["return"] = return_curve(episodes, confidence).to_dict()
    if records_regret(episodes):
        estimates["final_regret"] = final_regret(episodes, confidence)
        curves["regret"] = regret_curve(episodes, confidence).to_dict()
    if is_bandit(episodes):
        estimates["coverage"] = final_coverage(episodes, confidence)
        estimates["greedy_fraction"] = greedy_fraction(episodes, confidence)
        estimates["suffix_failure"] = suffix_failure(episodes, confidence)
        estimates["k_minfrac"] = k_minfrac(episodes, confidence)
        curves["coverage"] = coverage_curve(episodes, confidence).to_dict()
    if _records_outcome(episodes):
        for outcome, estimate in outcome_rates(episodes, confidence).items():
            estimates[f"{outcome}_rate"] = estimate
    summary.update({name: estimate.to_dict() for name, estimate in estimates.items()})
    summary["curves"] = curves
    return summary


def group_episodes(episodes: Sequence[Episode]) -> dict[tuple[str, str], list[Episode]]:
    """Episodes by (agent, env name: the id with any settings), groups sorted by key,
    episodes by seed within a group.

    Sorting makes summaries independent of the order in which episodes finished.
    """
    groups: dict[tuple[str, str], list[Episode]] = {}
    for episode in episodes:
        groups.setdefault((episode.agent, episode.env_name), []).append(episode)
    return {key: sorted(groups[key], key=lambda ep: ep.seed) for key in sorted(groups)}


def summarize_run(
    episodes: Sequence[Episode], confidence: float = CONFIDENCE
) -> list[dict[str, Any]]:
    """One :func:`summarize` row per (agent, env), with ``agent``, ``env_id`` (the env's
    name: its id, with the settings a suite gave it, :func:`records.env_label`), ``family``."""
    rows = []
    for (agent, env_id), group in group_episodes(episodes).items():
        families = sorted({ep.family for ep in group})
        row: dict[str, Any] = {
            "agent": agent,
            "env_id": env_id,
            "family": families[0] if len(families) == 1 else "/".join(families),
        }
        row.update(summarize(group, confidence))
        rows.append(row)
    return rows
