"""Expert iteration (SPEC.md section 3, related work): sample k completions per
context, keep the best (or those whose return beats a threshold), fine-tune with
cross-entropy on them, repeat.

A context is an episode seed: with the same seed the env's reward tape is the same,
so the k samples of a seed are comparable. Every iteration
(:meth:`ExpertIteration.iterate`) reads top to bottom:

1. **sample**: the LLM agent (temperature 1.0) plays every training seed k times.
   Sample j of iteration i draws its sampling seeds from the seed's agent stream
   ``i * k + j`` (:func:`agentbench.rollout.agent_rng`): same env, its own samples,
   and no stream is used twice in a run.
2. **score**: each episode's training return, the sum of PPO's
   :func:`training_rewards` (env reward + the -5 invalid penalty).
3. **select**: :func:`select_episodes`, the best sample of each seed (the first
   on ties) or every sample whose return is above ``threshold``.
4. **fine-tune**: cross-entropy on the kept steps' own generated tokens, the prompt
   masked (:func:`agentbench.rlft.sft.train_on_targets`, the loop SFT uses); the
   model is trained in place and the next iteration samples from it.
5. **log**: one JSON line per iteration (returns, invalid rate, regret of the
   samples, kept fraction, the kept steps' invalid rate, loss) in
   ``output_dir/metrics.jsonl``; a warning when most kept steps are invalid answers
   (a model that cannot answer in the format teaches itself the failure).

Randomness: sampling from the episode seeds and sample indices, each iteration's
shuffling and dropout from ``sft.seed`` and the iteration; no global RNG.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentbench.agent.llm import LLMAgent
from agentbench.errors import ConfigError
from agentbench.metrics import is_invalid
from agentbench.rlft import fsdp
from agentbench.rlft.config import ANY_FINITE, Interval
from agentbench.rlft.sampling import (
    SampledEpisode,
    SelfTrainer,
    SelfTrainingConfig,
    sample_episodes,
    sample_metrics,
)
from agentbench.settings import setting

SELECTIONS = ("best", "threshold")
# above this share of invalid answers among the kept steps, fine-tuning mostly teaches
# the format failure: a warning says so (the model needs a warm start or answer forcing)
MOSTLY_INVALID = 0.5


@dataclass(frozen=True)
class ExpertIterationConfig(SelfTrainingConfig):
    """Expert iteration: the shared self-training settings, plus the samples and the rule
    that keeps some of them."""

    train_episodes: int = setting(
        32, "contexts: seeds train_seed + [0, N), the same every iteration"
    )
    samples_per_seed: int = setting(4, "k: episodes sampled per seed and iteration")
    selection: str = setting(
        "best",
        (
            '"best": each seed\'s highest-return sample; "threshold": every sample whose '
            "training return is above `threshold`"
        ),
    )
    threshold: float = setting(0.0, 'the return to beat under selection "threshold"')

    def float_ranges(self) -> dict[str, Interval]:
        return {**super().float_ranges(), "threshold": ANY_FINITE}

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("train_episodes", "samples_per_seed"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection {self.selection!r} is not one of {', '.join(SELECTIONS)}")


def select_episodes(
    seeds: Sequence[int],
    returns: Sequence[float],
    selection: str = "best",
    threshold: float = 0.0,
) -> np.ndarray:
    """Which samples to keep (a boolean mask over the samples).

    ``"best"``: the sample with the highest return among those of the same seed (the
    first of them on ties), one per seed; ``"threshold"``: every sample whose return
    is strictly above ``threshold`` (possibly none).
    """
    if len(seeds) != len(returns):
        raise ConfigError(f"got {len(returns)} returns for {len(seeds)} samples")
    values = np.asarray(returns, dtype=np.float64)
    if selection == "threshold":
        return values > threshold
    if selection != "best":
        raise ConfigError(f"selection {selection!r} is not one of {', '.join(SELECTIONS)}")
    keep = np.zeros(len(values), dtype=bool)
    best: dict[int, int] = {}
    for i, seed in enumerate(seeds):
        if seed not in best or values[i] > values[best[seed]]:
            best[seed] = i
    keep[list(best.values())] = True
    return keep


class ExpertIteration(SelfTrainer):
    """Expert iteration on an LLM agent; ``generator`` (a TransformersGenerator) is
    fine-tuned in place."""

    config_class = ExpertIterationConfig  # read back from a checkpoint by resume
    method = "expert iteration"
    config: ExpertIterationConfig

    def train_seeds(self) -> list[int]:
        """The contexts: the same seeds every iteration."""
        first = self.config.train_seed
        return list(range(first, first + self.config.train_episodes))

    def sample_streams(self, iteration: int) -> list[int]:
        """The agent streams of iteration ``iteration``'s k samples of every seed."""
        k = self.config.samples_per_seed
        return list(range(iteration * k, (iteration + 1) * k))

    def collect(self, iteration: int) -> list[SampledEpisode]:
        """k episodes per training seed from the current policy, sorted by (seed, sample)."""
        agent = LLMAgent(
            self.generator, self.config.agent_settings(), name=f"expert-iteration@{iteration}"
        )
        self.generator.model.eval()
        with fsdp.generating(self.generator):
            return sample_episodes(
                agent, self.config, self.train_seeds(), self.sample_streams(iteration)
            )

    def iterate(self, iteration: int) -> dict[str, Any]:
        """One iteration: sample, score, select, fine-tune; returns its metrics."""
        config = self.config
        sampled = self.collect(iteration)  # 1. sample (2. score: their training returns)
        returns = [s.training_return for s in sampled]
        keep = select_episodes(  # 3. select
            [s.seed for s in sampled], returns, config.selection, config.threshold
        )
        kept = [s for s, chosen in zip(sampled, keep, strict=True) if chosen]
        prompts = [step.prompt_ids for s in kept for step in s.steps]
        targets = [step.completion_ids for s in kept for step in s.steps]
        kept_invalid = kept_invalid_rate(kept)
        if kept_invalid is not None and kept_invalid > MOSTLY_INVALID:
            warnings.warn(
                f"expert iteration {iteration}: {kept_invalid:.0%} of the kept steps are "
                "invalid answers, so fine-tuning on them mostly teaches the format failure; "
                "warm-start the model (agentbench sft) or turn on answer forcing",
                stacklevel=2,
            )
        losses: list[dict[str, Any]] = []
        if prompts:  # 4. fine-tune (threshold mode may keep nothing)
            losses = self.fine_tune(prompts, targets, iteration)
        return {  # 5. log
            **sample_metrics(sampled),
            "best_return": _mean_best_return(sampled),
            "kept_return": float(np.mean([s.training_return for s in kept])) if kept else None,
            "kept_fraction": len(kept) / len(sampled),
            "kept_steps": len(prompts),
            "kept_invalid_rate": kept_invalid,
            "loss": losses[-1]["loss"] if losses else None,
            "skipped_steps": sum(r["skipped_steps"] for r in losses),  # non-finite, not taken
        }


def kept_invalid_rate(kept: Sequence[SampledEpisode]) -> float | None:
    """The share of the kept steps whose answer was invalid (:func:`is_invalid`: the
    random fallback played; forced answers are not invalid); None when nothing was kept."""
    steps = [step for s in kept for step in s.episode.steps]
    if not steps:
        return None
    return sum(map(is_invalid, steps)) / len(steps)


def _mean_best_return(sampled: Sequence[SampledEpisode]) -> float:
    """The mean over seeds of the best sample's training return."""
    best: dict[int, float] = {}
    for s in sampled:
        best[s.seed] = max(best.get(s.seed, -np.inf), s.training_return)
    return float(np.mean(list(best.values())))
