"""Return-conditioned RL (SPEC.md section 3, related work): training samples carry a
return token in the context, "good" or "bad"; the model learns with cross-entropy
what it wrote under each, and at evaluation it is conditioned on "good".

The token is one line of the context, ``Target return: good.`` just before the
question (:attr:`ContextSettings.return_token`, reachable as
:attr:`LLMAgentSettings.return_token`). Every iteration
(:meth:`ReturnConditioned.iterate`) reads top to bottom:

1. **sample**: the LLM agent conditioned on "good" (temperature 1.0) plays this
   iteration's fresh seeds; next to each step's prompt it records the context the
   agent would have seen under every return token (:class:`ReturnTokenContexts`).
2. **label**: an episode is "good" when its training return (env reward + the -5
   invalid penalty, PPO's :func:`training_rewards` summed) is at or above
   ``threshold``, by default the median of the batch (``quantile``); else "bad".
   With ``credit="step"`` each step is labelled by its own training reward instead:
   in a bandit an answer changes only its own reward, and an episode label gives
   every step the other steps' luck too (the reason PPO's bandit test uses gamma 0).
3. **fine-tune**: cross-entropy on every step's own generated tokens under the
   context with its episode's label, the prompt masked
   (:func:`agentbench.rlft.sft.train_on_targets`, the loop SFT uses).
4. **log**: one JSON line per iteration in ``output_dir/metrics.jsonl``.

Conditioning on "bad" after training is the control that shows the token matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from agentbench.agent.context import build_context
from agentbench.agent.interface import Decision, Turn
from agentbench.agent.llm import LLMAgent
from agentbench.errors import ConfigError
from agentbench.rlft import fsdp
from agentbench.rlft.config import ANY_FINITE, UNIT, Interval
from agentbench.rlft.sampling import (
    SampledEpisode,
    SelfTrainer,
    SelfTrainingConfig,
    sample_episodes,
    sample_metrics,
)
from agentbench.settings import setting

GOOD, BAD = "good", "bad"
RETURN_TOKENS = (GOOD, BAD)
CONTEXTS_KEY = "return_token_contexts"  # Decision.extras: {token: chat}
CREDITS = ("episode", "step")


@dataclass(frozen=True)
class ReturnConditionedConfig(SelfTrainingConfig):
    """Return-conditioned training: the shared self-training settings, plus the batch
    size and the line between "good" and "bad"."""

    episodes_per_iteration: int = setting(32, "iteration i plays seeds train_seed + i*E + [0, E)")
    threshold: float | None = setting(
        None,
        (
            '"good" when the training return is >= this; None: the batch\'s `quantile` of '
            "returns (by default the median: half the batch each side)"
        ),
    )
    quantile: float = setting(0.5, 'with threshold None: 0.75 labels the best quarter "good"')
    credit: str = setting(
        "episode",
        (
            '"episode": every step carries its episode\'s label (SPEC); "step": each step is '
            "labelled by its own training reward, for envs where an answer changes only its own"
            " reward (bandits; cf. PPOConfig gamma = 0)"
        ),
    )

    def float_ranges(self) -> dict[str, Interval]:
        return {**super().float_ranges(), "threshold": ANY_FINITE, "quantile": UNIT}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.episodes_per_iteration < 1:
            raise ConfigError(
                f"episodes_per_iteration must be at least 1, got {self.episodes_per_iteration}"
            )
        if self.credit not in CREDITS:
            raise ConfigError(f"credit {self.credit!r} is not one of {', '.join(CREDITS)}")


def return_labels(
    returns: Sequence[float], threshold: float | None = None, quantile: float = 0.5
) -> tuple[list[str], float]:
    """Label "good" every return at or above ``threshold`` (None: the ``quantile`` of
    ``returns``, by default their median), the others "bad"; and the threshold used."""
    values = np.asarray(returns, dtype=np.float64)
    line = float(np.quantile(values, quantile)) if threshold is None else float(threshold)
    return [GOOD if value >= line else BAD for value in values], line


@dataclass
class ReturnTokenContexts:
    """The LLM agent, plus in each Decision's extras the context it would have seen at
    that step under every return token (built by :func:`build_context` on the very
    Turn the rollout hands it, as the agent builds its own)."""

    agent: LLMAgent

    @property
    def name(self) -> str:
        return self.agent.name

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        decisions = self.agent.act(turns)
        context = self.agent.settings.context
        for turn, decision in zip(turns, decisions, strict=True):
            decision.extras[CONTEXTS_KEY] = {
                token: build_context(turn.env, turn.history, replace(context, return_token=token))
                for token in RETURN_TOKENS
            }
        return decisions

    def supports(self, family: str) -> bool:
        return self.agent.supports(family)


class ReturnConditioned(SelfTrainer):
    """Return-conditioned training of an LLM agent; ``generator`` (a TransformersGenerator)
    is fine-tuned in place."""

    config_class = ReturnConditionedConfig  # read back from a checkpoint by resume
    method = "return-conditioned"
    evaluation_return_token = GOOD
    config: ReturnConditionedConfig

    def train_seeds(self, iteration: int) -> list[int]:
        """The episodes of iteration ``iteration`` (0-based): fresh seeds every iteration."""
        first = self.config.train_seed + iteration * self.config.episodes_per_iteration
        return list(range(first, first + self.config.episodes_per_iteration))

    def collect(self, iteration: int) -> list[SampledEpisode]:
        """This iteration's episodes from the policy conditioned on "good"."""
        settings = self.config.agent_settings(return_token=GOOD)
        agent = LLMAgent(self.generator, settings, name=f"return-conditioned@{iteration}")
        self.generator.model.eval()
        with fsdp.generating(self.generator):
            return sample_episodes(
                ReturnTokenContexts(agent), self.config, self.train_seeds(iteration)
            )

    def label_steps(self, sampled: Sequence[SampledEpisode]) -> tuple[list[list[str]], float]:
        """The return token of every step of every episode, and the threshold used: by
        the episode's training return, or (credit "step") by the step's own reward."""
        config = self.config
        by_episode = config.credit == "episode"
        values = (
            [s.training_return for s in sampled]
            if by_episode
            else np.concatenate([s.rewards for s in sampled])
        )
        flat, threshold = return_labels(values, config.threshold, config.quantile)
        if by_episode:
            return [[label] * len(s.steps) for s, label in zip(sampled, flat, strict=True)], (
                threshold
            )
        rows, start = [], 0
        for s in sampled:
            rows.append(flat[start : start + len(s.steps)])
            start += len(s.steps)
        return rows, threshold

    def training_pairs(
        self, sampled: Sequence[SampledEpisode], labels: Sequence[Sequence[str]]
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Every step's prompt ids under its label and its generated token ids."""
        prompts, targets = [], []
        for item, step_labels in zip(sampled, labels, strict=True):
            for step, label in zip(item.steps, step_labels, strict=True):
                if label == GOOD:  # the context the tokens were sampled under
                    prompts.append(step.prompt_ids)
                else:
                    prompts.append(self.generator.encode_chat(step.extras[CONTEXTS_KEY][label]))
                targets.append(step.completion_ids)
        return prompts, targets

    def iterate(self, iteration: int) -> dict[str, Any]:
        """One iteration: sample conditioned on "good", label, fine-tune; its metrics."""
        sampled = self.collect(iteration)  # 1. sample
        labels, threshold = self.label_steps(sampled)  # 2. label
        prompts, targets = self.training_pairs(sampled, labels)
        losses = self.fine_tune(prompts, targets, iteration)  # 3. fine-tune
        return {  # 4. log
            **sample_metrics(sampled),
            "threshold": threshold,
            "good_fraction": float(np.mean([label == GOOD for row in labels for label in row])),
            "loss": losses[-1]["loss"],
            "skipped_steps": sum(r["skipped_steps"] for r in losses),  # non-finite, not taken
        }
