"""The LLM agent's context: c_t = [task instruction; output instruction; last C transitions].

SPEC.md section 2. History lines are the env's own (``transition_text``), e.g.
``Step=3 Action=green Reward=0.41``. Two layouts carry the same text:

- ``single`` (the default, the paper's): one user message (the chat template of
  the model adds its own system prompt, if any) holding the instructions, the
  history and what the step shows (summary, guide, state), ending with a
  question asking for the next action.
- ``turns``: a conversation, one exchange per step. The first user message holds
  the instructions and the first decision; each step then adds the action taken
  as an assistant message (``ACTION=label``) and a user message with its history
  line and the next decision. While the window of C transitions holds, the
  prompt of step t is the start of the prompt of step t+1, so a server's prefix
  cache (vLLM, SGLang) prefills only the new exchange. The instruction lists
  every action once; an env whose legal actions change shows them in its state
  (tic-tac-toe's ``Legal actions`` line).
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
# the turns layout, once the window slides
HIDDEN_STEPS = ("Step 1 is not shown.", "Steps 1 to {last} are not shown.")
LAYOUTS = ("single", "turns")
TURNS_WITH_SHUFFLED_LABELS = (
    "the turns layout keeps earlier steps as they were shown; it cannot be combined with "
    "randomise_labels, which renames every action in the history each step"
)
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
    layout: str = "single"  # "turns": one exchange per step, append-only (module docstring)

    def __post_init__(self) -> None:
        token = self.return_token
        if token is not None and (not token.strip() or "\n" in token):
            raise ConfigError(f"return_token must be one non-empty line or None, got {token!r}")
        if self.guide is not None and self.guide not in GUIDES:
            raise ConfigError(
                f"guide must be one of {', '.join(GUIDES)} or None, got {self.guide!r}"
            )
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")


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
    shown = shown_steps(history, settings)
    if display_labels is None:
        return [env.transition_text(s.t, s.state, s.action, s.reward) for s in shown]
    return [format_transition(s.t, display_labels[s.action], s.reward) for s in shown]


def shown_steps(history: Sequence[Step], settings: ContextSettings) -> Sequence[Step]:
    """The last C steps of the history (all of them when C is None)."""
    if settings.history_length is None:
        return history
    if settings.history_length == 0:
        return []
    return history[-settings.history_length :]


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
    shown after the task instruction, agent.demonstrations), in ``settings.layout``."""
    env_labels = env.action_labels()
    labels = list(display_labels) if display_labels is not None else env_labels
    turns = settings.layout == "turns"
    if turns and display_labels is not None:
        raise ConfigError(TURNS_WITH_SHUFFLED_LABELS)
    listed = range(len(labels)) if turns else env.legal_actions()
    listed_labels = [labels[a] for a in listed]
    if display_labels is not None:
        # List them in the env's own order, so the order does not reveal the shuffle.
        rank = {label: i for i, label in enumerate(env_labels)}
        listed_labels.sort(key=rank.__getitem__)
    instruction = COT_INSTRUCTION if settings.cot else DIRECT_INSTRUCTION
    parts = [env.task_instruction()]
    if demonstrations:
        parts.append(demonstrations)
    parts.append(
        instruction.format(example=format_action(PLACEHOLDER), labels=", ".join(listed_labels))
    )
    current = (env.state_text(), observation)
    if turns:
        return _turns(env, history, settings, parts, current)
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
    parts += _decision_parts(history, labels, settings, *current)
    return [{"role": "user", "content": "\n\n".join(parts)}]


def _decision_parts(
    history: Sequence[Step],
    labels: Sequence[str],
    settings: ContextSettings,
    state: str,
    observation: object,
) -> list[str]:
    """What a step shows after the history: summary, guide, state, target return, question."""
    parts = []
    if settings.summary:
        parts.append("\n".join(["Summary of each action so far:", *summary_lines(history, labels)]))
    if settings.guide is not None:
        parts.append("\n".join(guide_lines(history, labels, settings.guide, observation)))
    if state:
        parts.append(state)
    if settings.return_token is not None:
        # Just before the question: the same distance from the answer at every step.
        parts.append(RETURN_LINE.format(token=settings.return_token))
    parts.append(QUESTION.format(step=len(history) + 1))
    return parts


def _turns(
    env: TextEnv,
    history: Sequence[Step],
    settings: ContextSettings,
    opening: list[str],
    current: tuple[str, object],
) -> Chat:
    """The turns layout: each shown step's decision as it was asked (from the state and
    observation its record holds), its action as the answer, then the next decision."""
    labels = env.action_labels()
    shown = shown_steps(history, settings)
    hidden = len(history) - len(shown)
    # what step hidden + 1 was shown before its decision: no history, or the hidden steps
    hidden_line = HIDDEN_STEPS[hidden > 1].format(last=hidden) if hidden else NO_HISTORY
    opening = [*opening, hidden_line]
    chat: Chat = []
    parts = opening
    for k, step in enumerate(shown, start=hidden):
        parts += _decision_parts(history[:k], labels, settings, step.state, step.observation)
        chat.append({"role": "user", "content": "\n\n".join(parts)})
        chat.append({"role": "assistant", "content": format_action(labels[step.action])})
        parts = [env.transition_text(step.t, step.state, step.action, step.reward)]
    parts += _decision_parts(history, labels, settings, *current)
    chat.append({"role": "user", "content": "\n\n".join(parts)})
    return chat


def shuffled_labels(labels: Sequence[str], rng: np.random.Generator) -> list[str]:
    """A random relabelling: action i is shown as the returned list's i-th label."""
    return [labels[i] for i in rng.permutation(len(labels))]
