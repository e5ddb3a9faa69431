"""The LLM agent's context: c_t = [task instruction; output instruction; last C transitions].

SPEC.md section 2. The context is one user message (the chat template of the
model adds its own system prompt, if any); it ends with a question asking for
the next action. History lines are the env's own (``transition_text``), e.g.
``Step=3 Action=green Reward=0.41``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agentbench.agent.parsing import PLACEHOLDER, format_action
from agentbench.envs.protocol import TextEnv, format_reward, format_transition
from agentbench.errors import ConfigError
from agentbench.metrics import arm_statistics, empirical_means
from agentbench.models.interface import Chat
from agentbench.records import Step

ACTION_LIST = "one of the actions: {labels}."  # the legal actions, in both instructions
COT_INSTRUCTION = (
    "Think step by step, briefly, about which action to take next. Then end your answer "
    "with {example}, where X is " + ACTION_LIST
)
DIRECT_INSTRUCTION = (
    "Answer only with {example}, where X is " + ACTION_LIST + " Do not write anything else."
)
QUESTION = "Step {step}: which action do you take?"
NO_HISTORY = "No steps taken yet."
RETURN_LINE = "Target return: {token}."  # return-conditioned RL (SPEC.md 3)


@dataclass(frozen=True)
class ContextSettings:
    """How the context is written (defaults from SPEC.md section 2)."""

    cot: bool = True  # think, then ACTION=X; False: ACTION=X only
    history_length: int | None = 50  # C: how many past transitions to show; None = all
    summary: bool = False  # append per-action count and mean reward (context summary)
    return_token: str | None = None  # return-conditioned RL: "good" / "bad"; None = no line

    def __post_init__(self) -> None:
        token = self.return_token
        if token is not None and (not token.strip() or "\n" in token):
            raise ConfigError(f"return_token must be one non-empty line or None, got {token!r}")


def history_lines(
    env: TextEnv,
    history: Sequence[Step],
    settings: ContextSettings,
    display_labels: Sequence[str] | None = None,
) -> list[str]:
    """The last C transitions as text.

    With ``display_labels`` (context randomisation, multi-armed bandits only)
    the lines name the actions by the labels of the current step's shuffle.
    """
    shown = history if settings.history_length is None else history[-settings.history_length :]
    if settings.history_length == 0:
        shown = []
    if display_labels is None:
        return [env.transition_text(s.t, s.state, s.action, s.reward) for s in shown]
    return [format_transition(s.t, display_labels[s.action], s.reward) for s in shown]


def summary_lines(history: Sequence[Step], labels: Sequence[str]) -> list[str]:
    """Per-action pull count and mean reward over the whole episode (context summary)."""
    counts, sums = arm_statistics(history, len(labels))
    means = empirical_means(counts, sums)
    lines = []
    for label, count, mean in zip(labels, counts, means, strict=True):
        if count == 0:
            lines.append(f"{label}: never chosen")
        else:
            lines.append(f"{label}: chosen {count} times, mean reward {format_reward(mean)}")
    return lines


def build_context(
    env: TextEnv,
    history: Sequence[Step],
    settings: ContextSettings = ContextSettings(),
    display_labels: Sequence[str] | None = None,
) -> Chat:
    """The chat for the next decision in ``env`` given the episode so far."""
    env_labels = env.action_labels()
    labels = list(display_labels) if display_labels is not None else env_labels
    legal_labels = [labels[a] for a in env.legal_actions()]
    if display_labels is not None:
        # List them in the env's own order, so the order does not reveal the shuffle.
        rank = {label: i for i, label in enumerate(env_labels)}
        legal_labels.sort(key=rank.__getitem__)
    instruction = COT_INSTRUCTION if settings.cot else DIRECT_INSTRUCTION
    parts = [
        env.task_instruction(),
        instruction.format(example=format_action(PLACEHOLDER), labels=", ".join(legal_labels)),
    ]
    lines = history_lines(env, history, settings, display_labels)
    if lines:
        total = len(history)
        heading = (
            "History of all steps so far:"
            if len(lines) == total
            else f"History of the last {len(lines)} of {total} steps:"
        )
        parts.append("\n".join([heading, *lines]))
    else:
        parts.append(NO_HISTORY)
    if settings.summary:
        parts.append("\n".join(["Summary of each action so far:", *summary_lines(history, labels)]))
    state = env.state_text()
    if state:
        parts.append(state)
    if settings.return_token is not None:
        # Just before the question: the same distance from the answer at every step.
        parts.append(RETURN_LINE.format(token=settings.return_token))
    parts.append(QUESTION.format(step=len(history) + 1))
    return [{"role": "user", "content": "\n\n".join(parts)}]


def shuffled_labels(labels: Sequence[str], rng: np.random.Generator) -> list[str]:
    """A random relabelling: action i is shown as the returned list's i-th label."""
    return [labels[i] for i in rng.permutation(len(labels))]
