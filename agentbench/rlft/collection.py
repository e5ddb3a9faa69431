"""Playing the policy, for training and for evaluation; the metrics line and its log.

Every trainer collects the same way: the LLM agent plays a list of seeds through
:func:`agentbench.rollout.play`, and an ``on_decision`` hook keeps each step's
prompt and generated token ids (:func:`played_with_tokens`). PPO keeps them per step
for its log-probs; expert iteration and return-conditioned training keep whole
episodes with their training returns. Evaluation plays held-out seeds with the same
agent, greedy by default (:func:`evaluate_policy`). Under data parallelism the
seeds are sharded and the episodes gathered, so every process sees them all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agentbench.agent.interface import Agent, Decision
from agentbench.agent.llm import TEMPLATE_MECHANISMS, LLMAgent, LLMAgentSettings
from agentbench.metrics import summarize
from agentbench.records import Episode, Step
from agentbench.rlft.distributed import DataParallel
from agentbench.rlft.policy import generated_tokens
from agentbench.rollout import play

SINGLE_PROCESS = DataParallel()


@dataclass
class TokenStep:
    """One decision of a played episode: what the policy saw and wrote."""

    t: int  # 1-based step of the episode
    prompt_ids: list[int]  # the rendered context, as the generation saw it
    completion_ids: list[int]  # the generated tokens
    extras: dict[str, Any]  # the Decision's extras (e.g. the contexts under each return token)
    trained: list[bool] | None = None  # per completion token: the policy's (None: all are)


@dataclass
class PlayedEpisode:
    """An episode of the policy with its steps' token ids (and, once scored, each step's
    training reward)."""

    episode: Episode
    sample: int  # the agent's stream of this seed (rollout's ``sample``)
    steps: list[TokenStep]
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0))  # training reward per step

    @property
    def seed(self) -> int:
        return self.episode.seed

    @property
    def training_return(self) -> float:
        return float(self.rewards.sum())


def played_with_tokens(
    agent: Agent,
    env_id: str,
    seeds: Sequence[int],
    *,
    num_envs: int,
    env_kwargs: dict[str, Any],
    sample: int = 0,
    templates: bool = False,
) -> list[PlayedEpisode]:
    """One episode per seed from the agent's stream ``sample``, each step with the token
    ids the model generated (an error for a step it did not write: RL fine-tuning
    trains only on the model's own answers; a forced answer's prefix is marked
    untrained, :func:`agentbench.rlft.policy.forced_tokens`). With ``templates``, the
    steps a mechanism answered from a template (try-all, epsilon-greedy) are left out
    of ``steps`` instead: they stay in the episode, and its rewards, but carry no
    tokens of the policy."""
    recorded: dict[tuple[int, int], TokenStep] = {}
    generator = getattr(agent, "generator", None)

    def record(episode: Episode, step: Step, decision: Decision) -> None:
        if templates and decision.extras.get("mechanism") in TEMPLATE_MECHANISMS:
            return
        tokens = generated_tokens(episode, step, decision, generator)
        recorded[(episode.seed, step.t)] = TokenStep(
            step.t, tokens.prompt_ids, tokens.completion_ids, decision.extras, tokens.trained
        )

    episodes = play(
        agent,
        env_id,
        list(seeds),
        num_envs=num_envs,
        env_kwargs=env_kwargs,
        on_decision=record,
        sample=sample,
    )
    return [
        PlayedEpisode(
            episode,
            sample,
            [
                recorded[(episode.seed, s.t)]
                for s in episode.steps
                if (episode.seed, s.t) in recorded
            ],
        )
        for episode in episodes
    ]


def gather_episodes(parallel: DataParallel, local: list[Episode]) -> list[Episode]:
    """The episodes played by all processes, sorted by seed (``local`` alone when single)."""
    if not parallel.active:
        return local
    shared = parallel.gather_json([json.loads(episode.to_json()) for episode in local])
    episodes = [Episode.from_dict(data) for part in shared for data in part]
    return sorted(episodes, key=lambda episode: episode.seed)


def evaluate_policy(
    generator: Any,
    settings: LLMAgentSettings,
    env_id: str,
    seeds: Sequence[int],
    *,
    num_envs: int,
    env_kwargs: dict[str, Any],
    name: str,
    parallel: DataParallel = SINGLE_PROCESS,
) -> tuple[dict[str, Any], list[Episode]]:
    """Play ``seeds`` with the policy (the agent ``settings``: greedy for evaluation),
    sharded over the processes, and summarise all of them (metrics.summarize)."""
    agent = LLMAgent(generator, settings, name=name)
    generator.model.eval()
    local = play(
        agent, env_id, parallel.shard(list(seeds)), num_envs=num_envs, env_kwargs=env_kwargs
    )
    episodes = gather_episodes(parallel, local)
    return summarize(episodes), episodes


OUTCOME_METRICS = (
    "return", "invalid_rate", "forced_rate", "final_regret", "coverage", "win_rate"
)  # fmt: skip


def outcome_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """From episodes' summary (metrics.summarize): the mean env return and invalid rate
    (and forced rate, for an agent with answer forcing), and, where the env has them,
    final regret and coverage (bandits) and the win rate (tic-tac-toe)."""
    return {name: summary[name]["mean"] for name in OUTCOME_METRICS if name in summary}


class MetricsLog:
    """Appends one JSON line per record to ``path`` (None: records are only returned)
    and, with a TensorBoard ``writer``, every number as a scalar at ``record[step_key]``
    (tag ``train/<name>``, or the name itself for ``eval/...``)."""

    def __init__(self, path: Path | None, step_key: str, writer: Any = None) -> None:
        self.path = path
        self.step_key = step_key
        self.writer = writer

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in record.items():
                if name != self.step_key and isinstance(value, int | float):
                    tag = name if name.startswith("eval/") else f"train/{name}"
                    self.writer.add_scalar(tag, value, record[self.step_key])
            self.writer.flush()
        return record
