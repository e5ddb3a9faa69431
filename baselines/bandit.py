"""Classic multi-armed bandit agents: UCB, Thompson sampling, epsilon-greedy, greedy, random.

Every agent decides from ``turn.history`` alone and draws randomness only from
``turn.rng``, the episode's own generator. So the same seed gives the same
episode whatever the batch, and the analysers can replay any logged history
through the same functions. The per-arm pull counts and reward sums are kept
up to date as a history grows (:class:`ArmStatistics`) rather than recounted
at every step; the numbers are the same as :func:`arm_statistics`'.

Ties are broken uniformly at random with ``turn.rng``. In particular "untried
arms first" picks uniformly AMONG the untried arms rather than the lowest
index: every untried arm has UCB value +inf, so this is plain tie-breaking,
and it avoids a bias towards the first labels (blue, green, ...) that would
show up in the coverage and frequency analyses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from agentbench.agent.interface import Decision, Turn
from agentbench.confidence_bounds import DEFAULT_UCB_C, ucb_values
from agentbench.envs import ARM_FAMILIES, BANDIT_FAMILY
from agentbench.envs.bandits import GAUSSIAN_NOISE_STD
from agentbench.errors import ConfigError
from agentbench.metrics import arm_statistics, empirical_means
from agentbench.records import Step

DEFAULT_EPSILON = 0.1  # SPEC.md 2: the epsilon of the epsilon-greedy mechanism

# A UCB formula: (counts, sums, t) -> one value per arm, +inf for untried arms.
UCBFormula = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def argmax_random_tie(values: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the largest value, uniformly at random among exact ties.

    Exact ties are common (untried arms at +inf, Bernoulli means like 1/1), and
    always picking the first would bias agents towards the first labels.
    """
    values = np.asarray(values)
    best = np.flatnonzero(values == values.max())
    if len(best) == 1:
        return int(best[0])
    return int(best[rng.integers(len(best))])


def greedy_action(counts: np.ndarray, sums: np.ndarray, rng: np.random.Generator) -> int:
    """Best empirical mean among tried arms; a random untried arm if none is tried."""
    means = empirical_means(counts, sums)
    if np.isnan(means).all():
        return int(rng.integers(len(means)))
    return argmax_random_tie(np.where(np.isnan(means), -np.inf, means), rng)


def _n_arms(turn: Turn) -> int:
    return len(turn.env.action_labels())


@dataclass
class _Counted:
    """The counts of one history's first ``n`` steps, the last of which is ``last``."""

    history: Sequence[Step]
    n: int
    last: Step | None
    counts: np.ndarray
    sums: np.ndarray


class ArmStatistics:
    """:func:`arm_statistics` of each turn's history, adding only the steps new since
    the previous batch.

    The runner appends one step per decision to each episode's history, so the
    counts of the previous batch plus the new steps are the recount, to the bit
    (the same additions in the same order as ``bincount``). A history that is not
    the same sequence grown by appending (another object, fewer steps, another
    step where the last counted one was) is counted afresh. Only the latest
    batch's histories are held.
    """

    def __init__(self) -> None:
        self._counted: dict[int, _Counted] = {}

    def of_batch(self, turns: Sequence[Turn]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(counts, sums) of every turn's history, in order (copies: callers may write)."""
        previous, self._counted = self._counted, {}
        statistics = []
        for turn in turns:
            history = turn.history
            counted = self._counted.get(id(history)) or previous.get(id(history))
            n_arms = _n_arms(turn)
            if not _extends(counted, history, n_arms):
                counts, sums = arm_statistics(history, n_arms)
                last = history[-1] if len(history) else None
                # float64: bincount of an empty history gives integer sums
                counted = _Counted(history, len(history), last, counts, sums.astype(np.float64))
            elif counted.n < len(history):
                for step in history[counted.n :]:
                    counted.counts[step.action] += 1
                    counted.sums[step.action] += step.reward
                counted.n, counted.last = len(history), history[-1]
            self._counted[id(history)] = counted
            statistics.append((counted.counts.copy(), counted.sums.copy()))
        return statistics


def _extends(counted: _Counted | None, history: Sequence[Step], n_arms: int) -> bool:
    """Whether ``history`` is the sequence ``counted`` counted, grown by appending only."""
    return (
        counted is not None
        and counted.history is history
        and len(counted.counts) == n_arms
        and counted.n <= len(history)
        and (counted.n == 0 or history[counted.n - 1] is counted.last)
    )


# -- agents ----------------------------------------------------------------------------


@dataclass
class CountingAgent(ABC):
    """An arm-bandit agent that decides from each history's arm counts and reward sums
    (kept up to date incrementally by :class:`ArmStatistics`): subclasses say how in
    :meth:`choose`."""

    _statistics: ArmStatistics = field(
        default_factory=ArmStatistics, init=False, repr=False, compare=False
    )

    @abstractmethod
    def choose(self, turn: Turn, counts: np.ndarray, sums: np.ndarray) -> int:
        """The arm to pull given this turn's counts and sums (copies: may be written)."""

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        return [
            Decision(self.choose(turn, counts, sums))
            for turn, (counts, sums) in zip(turns, self._statistics.of_batch(turns), strict=True)
        ]

    def supports(self, family: str) -> bool:
        return family in ARM_FAMILIES


@dataclass
class UCBAgent(CountingAgent):
    """UCB (Auer et al., 2002): untried arms first, then argmax of the UCB values.

    ``c`` is either the constant of :func:`ucb_values` or a whole formula
    ``(counts, sums, t) -> values``; the default is SPEC.md's reference
    ``mean + sqrt(2 ln t / n)``. On contextual bandits it ignores the context,
    which makes it the context-free reference there.
    """

    c: float | UCBFormula = DEFAULT_UCB_C
    name: str = ""

    def __post_init__(self) -> None:
        if not callable(self.c) and (not _is_number(self.c) or self.c < 0):
            raise ConfigError(f"UCB c must be a number >= 0 or a callable, got {self.c!r}")
        if not self.name:
            if callable(self.c):
                self.name = f"ucb({getattr(self.c, '__name__', 'custom')})"
            else:
                self.name = "ucb" if self.c == DEFAULT_UCB_C else f"ucb(c={self.c:g})"

    def values(self, counts: np.ndarray, sums: np.ndarray, t: int) -> np.ndarray:
        """The UCB values this agent maximises."""
        if callable(self.c):
            return np.asarray(self.c(counts, sums, t), dtype=np.float64)
        return ucb_values(counts, sums, t, float(self.c))

    def choose(self, turn: Turn, counts: np.ndarray, sums: np.ndarray) -> int:
        return argmax_random_tie(self.values(counts, sums, len(turn.history)), turn.rng)


@dataclass(frozen=True)
class GaussianPosterior:
    """Normal prior on each arm mean, Gaussian rewards with known noise (conjugate).

    The default prior N(0.5, 1) covers the U(0, 1) arm means of SPEC.md 1.1
    loosely, so the data dominates after a few pulls.
    """

    prior_mean: float = 0.5
    prior_std: float = 1.0
    noise_std: float = 1.0

    def parameters(self, counts: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of each arm's mean."""
        prior_precision = 1.0 / self.prior_std**2
        noise_precision = 1.0 / self.noise_std**2
        precision = prior_precision + np.asarray(counts) * noise_precision
        mean = (prior_precision * self.prior_mean + np.asarray(sums) * noise_precision) / precision
        return mean, 1.0 / np.sqrt(precision)

    def sample(self, counts: np.ndarray, sums: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One draw of every arm's mean from its posterior."""
        mean, std = self.parameters(counts, sums)
        return mean + std * rng.standard_normal(len(mean))


@dataclass(frozen=True)
class BetaPosterior:
    """Beta prior on each arm's success probability, Bernoulli rewards (conjugate)."""

    alpha: float = 1.0
    beta: float = 1.0

    def parameters(self, counts: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior Beta parameters (alpha + successes, beta + failures) of each arm."""
        counts, sums = np.asarray(counts, dtype=np.float64), np.asarray(sums, dtype=np.float64)
        return self.alpha + sums, self.beta + (counts - sums)

    def sample(self, counts: np.ndarray, sums: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One draw of every arm's success probability from its posterior."""
        a, b = self.parameters(counts, sums)
        return rng.beta(a, b)


Posterior = GaussianPosterior | BetaPosterior


def bandit_posterior(env: object) -> Posterior:
    """The conjugate model matching ``env``'s reward distribution.

    Bernoulli bandits get Beta(1, 1); Gaussian bandits a Normal posterior with
    the env's true noise level (known-variance Thompson sampling). An env that
    does not describe itself (no ``spec_params``) gets the default Gaussian
    model with unit noise.
    """
    params = getattr(env, "spec_params", None)
    distribution = getattr(params, "distribution", None)
    if distribution == "bernoulli":
        return BetaPosterior()
    noise = getattr(params, "noise", None)
    if distribution == "gaussian" and noise in GAUSSIAN_NOISE_STD:
        return GaussianPosterior(noise_std=GAUSSIAN_NOISE_STD[noise])
    return GaussianPosterior()


@dataclass
class ThompsonSamplingAgent(CountingAgent):
    """Thompson sampling: play the arm whose posterior draw is largest.

    The model is chosen per env by :func:`bandit_posterior` (Beta on Bernoulli,
    Normal on Gaussian), unless ``posterior`` fixes one.
    """

    posterior: Posterior | None = None
    name: str = "thompson"

    def choose(self, turn: Turn, counts: np.ndarray, sums: np.ndarray) -> int:
        model = self.posterior or bandit_posterior(turn.env)
        return argmax_random_tie(model.sample(counts, sums, turn.rng), turn.rng)

    def supports(self, family: str) -> bool:
        return family == BANDIT_FAMILY


@dataclass
class EpsilonGreedyAgent(CountingAgent):
    """With probability epsilon a uniformly random arm, else the best empirical mean.

    No "untried arms first": untried arms are reached only by exploration (or
    when nothing is tried yet, by a random first pull), which is the classic
    algorithm and the LLM exploration mechanism of SPEC.md 2.
    """

    epsilon: float = DEFAULT_EPSILON
    name: str = ""

    def __post_init__(self) -> None:
        if not _is_number(self.epsilon) or not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must be a probability in [0, 1], got {self.epsilon!r}")
        if not self.name:
            default = self.epsilon == DEFAULT_EPSILON
            self.name = "epsilon-greedy" if default else f"epsilon-greedy(epsilon={self.epsilon:g})"

    def choose(self, turn: Turn, counts: np.ndarray, sums: np.ndarray) -> int:
        # One uniform draw per step whatever epsilon is, so the stream stays aligned.
        if turn.rng.random() < self.epsilon:
            legal = turn.env.legal_actions()
            return int(legal[turn.rng.integers(len(legal))])
        return greedy_action(counts, sums, turn.rng)


@dataclass
class GreedyAgent(CountingAgent):
    """Pull every arm once (in random order), then always the best empirical mean.

    The pure-exploitation reference: the failure mode (locking onto an arm
    that looked good once) that the greedy-fraction and suffix-failure metrics
    measure in LLM agents.
    """

    name: str = "greedy"

    def choose(self, turn: Turn, counts: np.ndarray, sums: np.ndarray) -> int:
        untried = np.flatnonzero(counts == 0)
        if len(untried):
            return int(untried[turn.rng.integers(len(untried))])
        return greedy_action(counts, sums, turn.rng)


@dataclass
class RandomAgent:
    """A uniformly random legal action: the lower reference on every env family."""

    name: str = "random"

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        decisions = []
        for turn in turns:
            legal = turn.env.legal_actions()
            decisions.append(Decision(int(legal[turn.rng.integers(len(legal))])))
        return decisions

    def supports(self, family: str) -> bool:
        return True  # needs nothing but legal_actions()


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
