"""Decisions at k samples (SPEC.md section 5): maj@k, pass@k and rerank@k of action choice.

Recipe: bandit histories (random play, or the first steps of an agent's own
episodes, as the knowing-doing probe takes them); for each, the agent's context
(``build_context``, with or without CoT) and ``n`` sampled answers at the
agent's temperature, each read by ``parse_action``. A sample is correct when it
names the episode's best arm (the highest true mean: what regret measures).
With ``c`` of the ``n`` samples correct, for every k <= n:

- pass@k: the chance that at least one of k samples is correct, by the unbiased
  estimator 1 - C(n - c, k) / C(n, k) (Chen et al., 2021), so n > k gives a less
  noisy estimate than drawing k;
- maj@k: the first k samples vote; the most named action wins (a tie goes to
  the one named first); correct when it is the best arm. Invalid samples do not
  vote; with no valid vote the decision is wrong;
- rerank@k: of the first k valid samples, the one the model scores highest
  (its mean token log-probability, as the generator reported it) is chosen;
  n/a when the generator reports no log-probabilities.

Each metric is averaged over histories with a 95% t interval. The share of
valid samples is reported too: a model that rarely answers in the format has
a low pass@k for that reason, not for its choices.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agentbench.agent.context import ContextSettings, build_context
from agentbench.agent.llm import DIRECT_BUDGET
from agentbench.agent.parsing import parse_action
from agentbench.analysis.frequency_bias import (
    PROBE_ENV_ID,
    ProbeRun,
    bandit_env,
    batched,
    check_positive,
    progress_bar,
)
from agentbench.analysis.knowing_doing import (
    check_history_lengths,
    own_episodes,
    probe_histories,
)
from agentbench.errors import ConfigError
from agentbench.io import record_dict
from agentbench.metrics import CONFIDENCE, Estimate, pass_at_k, t_interval
from agentbench.models.interface import GenerationConfig, TextGenerator
from agentbench.records import Episode

DEFAULT_KS = (1, 4, 16)
AT_K_METRICS = ("pass", "maj", "rerank")


def majority_at_k(actions: Sequence[int | None], correct: int, k: int) -> bool:
    """Whether the vote of the first ``k`` samples (None: invalid) picks ``correct``."""
    votes = Counter(a for a in actions[:k] if a is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(a for a in actions[:k] if a is not None and votes[a] == top)
    return winner == correct


def rerank_at_k(
    actions: Sequence[int | None], scores: Sequence[float | None], correct: int, k: int
) -> bool | None:
    """Whether the best-scored valid sample of the first ``k`` is ``correct``; None when
    a valid sample has no score (the generator gave no log-probabilities)."""
    valid = [(s, a) for a, s in zip(actions[:k], scores[:k], strict=True) if a is not None]
    if not valid:
        return False
    if any(s is None for s, _ in valid):
        return None
    best = max(range(len(valid)), key=lambda i: valid[i][0])  # first of equal scores
    return valid[best][1] == correct


@dataclass(frozen=True)
class SampledDecision:
    """One history: its best arm and the n samples' actions and scores."""

    history_length: int
    best: int
    actions: tuple[int | None, ...]  # None: the sample named no legal action
    scores: tuple[float | None, ...]  # mean token log-prob; None when not reported

    def to_dict(self) -> dict:
        return record_dict(self)

    def at_k(self, k: int) -> dict[str, float | None]:
        n = len(self.actions)
        correct = sum(a == self.best for a in self.actions)
        rerank = rerank_at_k(self.actions, self.scores, self.best, k)
        return {
            "pass": pass_at_k(n, correct, k),
            "maj": float(majority_at_k(self.actions, self.best, k)),
            "rerank": None if rerank is None else float(rerank),
        }


@dataclass
class AtKResult(ProbeRun):
    """Every history's samples, with maj@k, pass@k and rerank@k computed from them."""

    cot: bool
    temperature: float
    ks: tuple[int, ...]
    decisions: list[SampledDecision]
    histories: str = "random"

    @property
    def n_samples(self) -> int:
        return len(self.decisions[0].actions) if self.decisions else 0

    def valid_share(self) -> float:
        actions = [a for d in self.decisions for a in d.actions]
        return sum(a is not None for a in actions) / len(actions) if actions else math.nan

    def metrics(self, confidence: float = CONFIDENCE) -> dict[str, dict[str, Estimate | None]]:
        """metric -> "k" -> the mean over histories with its interval (None: n/a)."""
        table: dict[str, dict[str, Estimate | None]] = {name: {} for name in AT_K_METRICS}
        for k in self.ks:
            rows = [d.at_k(k) for d in self.decisions]
            for name in AT_K_METRICS:
                values = [row[name] for row in rows]
                usable = None not in values and values
                table[name][str(k)] = t_interval(values, confidence) if usable else None
        return table

    def to_dict(self) -> dict:
        metrics = self.metrics()
        return {
            **self.header("decision_at_k"),
            "histories": self.histories,
            "cot": self.cot,
            "temperature": self.temperature,
            "n_samples": self.n_samples,
            "valid_share": self.valid_share(),
            "metrics": {
                name: {k: (e.to_dict() if e is not None else None) for k, e in row.items()}
                for name, row in metrics.items()
            },
            "decisions": [d.to_dict() for d in self.decisions],
        }


def run_at_k_probe(
    generator: TextGenerator,
    env_id: str = PROBE_ENV_ID,
    n_histories: int = 32,
    n_samples: int = 16,
    ks: Sequence[int] = DEFAULT_KS,
    history_lengths: Sequence[int] = (5, 10, 20, 30, 40),
    cot: bool = False,
    budget: int = 256,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    episodes: Sequence[Episode] | None = None,
) -> AtKResult:
    """Sample ``n_samples`` answers after each of ``n_histories`` histories; see the module
    docstring. Sampling seeds come from ``seed``; ``episodes`` as in the knowing-doing probe."""
    check_positive("n_histories", n_histories)
    check_positive("n_samples", n_samples)
    check_positive("budget", budget)
    ks = tuple(sorted({check_positive("k", k) for k in ks}))
    if not ks or ks[-1] > n_samples:
        raise ConfigError(f"every k must be between 1 and n_samples={n_samples}, got {list(ks)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be > 0 (samples must differ), got {temperature!r}")
    env = bandit_env(env_id)
    lengths = check_history_lengths(history_lengths, env)
    own = own_episodes(episodes, env_id, max(lengths)) if episodes is not None else None
    rng = np.random.default_rng(seed)
    settings = ContextSettings(cot=cot, history_length=None)
    cases = []
    for i, (view, history) in enumerate(probe_histories(env, n_histories, lengths, rng, own)):
        best = int(np.argmax(env.unwrapped.arm_means))
        labels, legal = view.action_labels(), view.legal_actions()
        chat = build_context(view, history, settings)
        cases += [(i, len(history), best, labels, legal, chat, int(rng.integers(2**31)))
                  for _ in range(n_samples)]  # fmt: skip
    env.close()

    config = GenerationConfig(
        max_new_tokens=budget if cot else DIRECT_BUDGET, temperature=temperature
    )
    samples: dict[int, list[tuple[int | None, float | None]]] = {}
    bar = progress_bar(len(cases), f"decisions at k {generator.name}", progress)
    for chunk in batched(cases, batch_size):
        generations = generator.generate(
            [case[5] for case in chunk], config, [case[6] for case in chunk]
        )
        for case, generation in zip(chunk, generations, strict=True):
            parsed = parse_action(generation.text, case[3], case[4])
            score = float(np.mean(generation.logprobs)) if generation.logprobs else None
            samples.setdefault(case[0], []).append((parsed.index if parsed.valid else None, score))
        bar.update(len(chunk))
    bar.close()
    decisions = []
    for i in range(n_histories):
        _, length, best, *_ = cases[i * n_samples]
        actions, scores = zip(*samples[i], strict=True)
        decisions.append(SampledDecision(length, best, tuple(actions), tuple(scores)))
    histories = "random" if own is None else f"episodes of {own[0].agent}"
    return AtKResult(
        generator.name, env_id, int(seed), cot, float(temperature), ks, decisions, histories
    )
