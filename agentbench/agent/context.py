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
from agentbench.confidence_bounds import DEFAULT_ALPHA, linucb_terms, ucb_values
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
# Algorithm guides (BanditBench's algorithm-guided summaries, in our words): what UCB
# or LinUCB would compute from the history, shown to the model, which still decides.
GUIDES = ("ucb", "linucb")
UCB_GUIDE = (
    "UCB guide: each action's mean reward + exploration bonus sqrt(2 ln t / n), with "
    "t = {t} steps so far and n the action's count; UCB would pick the highest value."
)
LINUCB_GUIDE = (
    "LinUCB guide for this context: each action's predicted reward (a linear fit of its "
    "rewards on the features) + exploration bonus; LinUCB would pick the highest value."
)


@dataclass(frozen=True)
class ContextSettings:
    """How the context is written (defaults from SPEC.md section 2)."""

    cot: bool = True  # think, then ACTION=X; False: ACTION=X only
    history_length: int | None = 50  # C: how many past transitions to show; None = all
    summary: bool = False  # append per-action count and mean reward (context summary)
    return_token: str | None = None  # return-conditioned RL: "good" / "bad"; None = no line
    guide: str | None = None  # "ucb" / "linucb": the algorithm's values in the context

    def __post_init__(self) -> None:
        token = self.return_token
        if token is not None and (not token.strip() or "\n" in token):
            raise ConfigError(f"return_token must be one non-empty line or None, got {token!r}")
        if self.guide is not None and self.guide not in GUIDES:
            raise ConfigError(
                f"guide must be one of {', '.join(GUIDES)} or None, got {self.guide!r}"
            )


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


def guide_lines(
    history: Sequence[Step], labels: Sequence[str], guide: str, observation: object = None
) -> list[str]:
    """The algorithm guide: every action's value as ``mean + bonus = value`` (UCB, from the
    history's counts and rewards) or ``prediction + bonus = value`` (LinUCB, for the
    current context ``observation``), two decimals, in the env's action order."""
    if guide == "ucb":
        counts, sums = arm_statistics(history, len(labels))
        values, means = ucb_values(counts, sums, len(history)), empirical_means(counts, sums)
        lines = [UCB_GUIDE.format(t=len(history))]
        for label, count, mean, value in zip(labels, counts, means, values, strict=True):
            if count == 0:
                lines.append(f"{label}: never chosen, value inf")
            else:
                lines.append(f"{label}: {format_reward(mean)} + "
                             f"{format_reward(value - mean)} = {format_reward(value)}")  # fmt: skip
        return lines
    if observation is None:
        raise ConfigError("the LinUCB guide needs the current context's features (observation)")
    prediction, width = linucb_terms(history, np.asarray(observation), len(labels))
    bonus = DEFAULT_ALPHA * width
    return [LINUCB_GUIDE] + [
        f"{label}: {format_reward(p)} + {format_reward(b)} = {format_reward(p + b)}"
        for label, p, b in zip(labels, prediction, bonus, strict=True)
    ]


def build_context(
    env: TextEnv,
    history: Sequence[Step],
    settings: ContextSettings = ContextSettings(),
    display_labels: Sequence[str] | None = None,
    observation: object = None,
    demonstrations: str = "",
) -> Chat:
    """The chat for the next decision in ``env`` given the episode so far (``observation``:
    the current one, which the LinUCB guide reads; ``demonstrations``: expert episodes
    shown after the task instruction, agent.demonstrations)."""
    env_labels = env.action_labels()
    labels = list(display_labels) if display_labels is not None else env_labels
    legal_labels = [labels[a] for a in env.legal_actions()]
    if display_labels is not None:
        # List them in the env's own order, so the order does not reveal the shuffle.
        rank = {label: i for i, label in enumerate(env_labels)}
        legal_labels.sort(key=rank.__getitem__)
    instruction = COT_INSTRUCTION if settings.cot else DIRECT_INSTRUCTION
    parts = [env.task_instruction()]
    if demonstrations:
        parts.append(demonstrations)
    parts.append(
        instruction.format(example=format_action(PLACEHOLDER), labels=", ".join(legal_labels))
    )
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
    if settings.guide is not None:
        parts.append("\n".join(guide_lines(history, labels, settings.guide, observation)))
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
