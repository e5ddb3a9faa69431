"""maj@k, pass@k and rerank@k of action choice (SPEC.md section 5)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import numpy as np
import pytest

from agentbench.analysis.at_k import majority_at_k, pass_at_k, rerank_at_k, run_at_k_probe
from agentbench.errors import ConfigError
from agentbench.models.interface import Chat, Generation, GenerationConfig
from agentbench.testing.planted import read_prompt

ENV = "agentbench/GaussianBandit-5arms-medium-button-v0"


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 1, 6), (7, 3, 4)])
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample(n: int, c: int, k: int) -> None:
    correct = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    exact = sum(any(correct[i] for i in subset) for subset in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_refuses_impossible_counts() -> None:
    with pytest.raises(ConfigError, match="pass@k needs"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ConfigError, match="pass@k needs"):
        pass_at_k(4, 1, 5)


def test_majority_votes_ignore_invalid_samples_and_ties_go_to_the_first_named() -> None:
    assert majority_at_k([2, 1, 1, 2], correct=2, k=4)  # 2-2 tie: 2 was named first
    assert not majority_at_k([2, 1, 1, 2], correct=2, k=3)  # 1 wins among the first three
    assert majority_at_k([None, None, 3], correct=3, k=3)
    assert not majority_at_k([None, None], correct=0, k=2)  # no valid vote: wrong


def test_rerank_picks_the_best_scored_valid_sample() -> None:
    assert rerank_at_k([0, 1, 2], [-3.0, -0.5, -1.0], correct=1, k=3)
    assert not rerank_at_k([0, 1, 2], [-3.0, -0.5, -1.0], correct=1, k=1)
    assert rerank_at_k([None, 2], [0.0, -9.0], correct=2, k=2)  # invalid ones are not chosen
    assert rerank_at_k([0, 1], [None, None], correct=0, k=2) is None  # no scores: n/a


class _Sampler:
    """Answers a label chosen by ``choose(labels, seed)``; log-prob -index (label 0 best)."""

    name = "sampler"

    def __init__(self, choose) -> None:
        self.choose = choose

    def generate(
        self, prompts: Sequence[Chat], config: GenerationConfig, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        assert config.temperature == 1.0 and config.max_new_tokens == 16  # no CoT: ACTION= only
        out = []
        for chat, seed in zip(prompts, seeds, strict=True):
            labels = read_prompt(chat).labels
            index = self.choose(labels, seed)
            text = "no idea" if index is None else f"ACTION={labels[index]}"
            out.append(Generation(text, logprobs=[] if index is None else [-float(index)]))
        return out


def test_a_uniform_sampler_gets_the_chance_pass_at_k() -> None:
    uniform = _Sampler(lambda labels, seed: int(np.random.default_rng(seed).integers(5)))
    result = run_at_k_probe(uniform, ENV, n_histories=80, n_samples=16, ks=(1, 4, 16),
                            progress=False)  # fmt: skip
    metrics = result.metrics()
    # 1 arm in 5 is the best: pass@k = 1 - 0.8^k, up to the noise of 80 histories (SE ~0.02)
    for k in (1, 4, 16):
        assert metrics["pass"][str(k)].mean == pytest.approx(1 - 0.8**k, abs=0.06)
    assert result.valid_share() == 1.0
    data = result.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["probe"] == "decision_at_k" and data["n_samples"] == 16
    assert len(data["decisions"]) == 80 and data["histories"] == "random"


def test_maj_and_rerank_follow_the_samples() -> None:
    # Half the samples are invalid, the rest uniform; the best-scored valid one is the
    # lowest index, so rerank@k is right exactly when that is the best arm.
    def choose(labels: list[str], seed: int) -> int | None:
        draw = np.random.default_rng(seed)
        return None if draw.random() < 0.5 else int(draw.integers(5))

    result = run_at_k_probe(_Sampler(choose), ENV, n_histories=24, n_samples=8, ks=(1, 8),
                            progress=False)  # fmt: skip
    assert 0.35 < result.valid_share() < 0.65
    for k in (1, 8):
        maj, rerank = [], []
        for d in result.decisions:
            valid = [a for a in d.actions[:k] if a is not None]
            votes = {a: valid.count(a) for a in valid}
            winner = next((a for a in valid if votes[a] == max(votes.values())), None)
            maj.append(winner == d.best)
            rerank.append(bool(valid) and min(valid) == d.best)
        metrics = result.metrics()
        assert metrics["maj"][str(k)].mean == pytest.approx(np.mean(maj))
        assert metrics["rerank"][str(k)].mean == pytest.approx(np.mean(rerank))


def test_probe_settings_are_checked() -> None:
    sampler = _Sampler(lambda labels, seed: 0)
    with pytest.raises(ConfigError, match="every k must be between 1 and n_samples=4"):
        run_at_k_probe(sampler, ENV, n_samples=4, ks=(1, 8), progress=False)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        run_at_k_probe(sampler, ENV, temperature=0.0, progress=False)
