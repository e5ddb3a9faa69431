"""Scripted "models" with a planted, known failure, to validate the failure-mode probes.

A probe that reports a failure mode is only trustworthy once it has been seen
to find the failure where it is planted and not where it is absent. Each model
here reads the prompt TEXT as an LLM would (the history lines
``Step=3 Action=green Reward=0.41`` and the output instruction "... one of the
actions: blue, green, red."), decides by a fixed rule and answers through the
:class:`~agentbench.models.interface.TextGenerator` interface. So the same
object can be scored by the frequency bias probe, asked by the knowing-doing
probe, and played through the real runner as ``LLMAgent(GreedyModel())``,
where the greediness metrics measure it like any other agent.

- :class:`FrequencyBiasedModel` copies the most frequent action in its context.
- :class:`ShareCopierModel` copies it with a probability equal to its share of
  the history, so copying grows with repetitions; :class:`UniformModel` ignores
  the history (no frequency bias to find).
- :class:`GreedyModel` tries each arm once, then exploits the best empirical mean.
- :class:`KnowingButGreedyModel` writes the correct UCB values when asked, then
  acts greedily anyway: the knowing-doing gap.
- :class:`UCBModel` writes the correct UCB values and acts on them.

Everything is deterministic: decisions depend on the prompt only (ties go to
the first label; the two random models draw from a generator seeded by the
history shown and their ``seed``), and generation ignores temperature and seeds, because the
planted behaviour, not sampling noise, is what a validation test checks.
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax

from agentbench.agent.context import ACTION_LIST
from agentbench.agent.parsing import format_action, normalise_label, parse_action
from agentbench.analysis.knowing_doing import UCB_BONUS, UCB_OPEN, format_ucb_values
from agentbench.confidence_bounds import DEFAULT_UCB_C, ucb_values
from agentbench.envs.protocol import TRANSITION_LINE, TRANSITION_STATE
from agentbench.errors import ConfigError
from agentbench.metrics import arm_statistics, empirical_means
from agentbench.models.interface import Chat, Generation, GenerationConfig, Seeds
from agentbench.records import Step


def _pattern(template: str, fields: dict[str, str]) -> str:
    """A regex matching ``template`` (a str.format template) with each ``{field}`` (or
    ``{field:spec}``) replaced by the regex given for it; the rest matches literally."""
    parts = re.split(r"(\{\w+(?::[^}]*)?\})", template)
    return "".join(
        fields[part[1:-1].split(":")[0]] if part.startswith("{") else re.escape(part)
        for part in parts
    )


# What the prompt reader looks for, built from the texts the prompts are made of:
# the env's history line, the agent's output instruction, the knowing-doing request.
HISTORY_LINE = re.compile(
    "^"
    + _pattern(
        TRANSITION_LINE,
        {
            "step": r"(?P<t>\d+)",
            "state": "(?:" + _pattern(TRANSITION_STATE, {"state": r"\S*"}) + ")?",
            "label": "(?P<label>.+?)",
            "reward": r"(?P<reward>\S+)",
        },
    )
    + r"[ \t]*$",
    re.MULTILINE,
)
ACTION_LIST_PATTERN = re.compile(_pattern(ACTION_LIST, {"labels": "(?P<labels>.+?)"}) + r"(?=\s|$)")
UCB_REQUEST = UCB_OPEN
UCB_CONSTANT = re.compile(_pattern(UCB_BONUS, {"c": r"\s*(?P<c>[^\s)]+)"}))
# Log-prob logit of a scoring candidate that names no action: far below any label.
UNRECOGNISED_LOGIT = -100.0


@dataclass(frozen=True)
class BanditPrompt:
    """What a planted model reads from a bandit prompt."""

    labels: list[str]  # the actions, in the order the output instruction lists them
    history: list[Step]  # the history lines shown (rewards as shown: two decimals)
    ucb_c: float | None  # the UCB constant when the prompt asks for <ucb_values>, else None

    @property
    def n_arms(self) -> int:
        return len(self.labels)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Pull counts and reward sums per action over the history shown."""
        return arm_statistics(self.history, self.n_arms)


def read_prompt(chat: Chat) -> BanditPrompt:
    """Labels, history and any UCB request from the last user message of ``chat``.

    Raises ConfigError when the message lists no actions or a history line names
    an action that is not listed: a planted model cannot answer such a prompt.
    """
    users = [message["content"] for message in chat if message.get("role") == "user"]
    if not users:
        raise ConfigError("a planted model needs a user message to read; the chat has none")
    text = users[-1]
    listed = list(ACTION_LIST_PATTERN.finditer(text))
    if not listed:
        raise ConfigError(
            "a planted model reads the actions from 'one of the actions: a, b, c.'; "
            "the prompt has no such instruction"
        )
    labels = [label.strip() for label in listed[-1].group("labels").split(",")]
    index = {normalise_label(label): i for i, label in enumerate(labels)}
    history = []
    for match in HISTORY_LINE.finditer(text):
        action = index.get(normalise_label(match.group("label")))
        if action is None:
            raise ConfigError(
                f"history line {match.group(0)!r} names an action that is not among "
                f"the listed actions {labels}"
            )
        history.append(
            Step(
                t=int(match.group("t")),
                action=action,
                label=labels[action],
                reward=float(match.group("reward")),
            )
        )
    ucb_c = None
    if UCB_REQUEST in text:
        constant = UCB_CONSTANT.search(text)
        ucb_c = float(constant.group("c")) if constant else DEFAULT_UCB_C
    return BanditPrompt(labels, history, ucb_c)


def best_mean_action(counts: np.ndarray, sums: np.ndarray) -> int:
    """The tried action with the highest empirical mean (first on ties); 0 if none is tried."""
    means = empirical_means(counts, sums)
    if np.isnan(means).all():
        return 0
    return int(np.argmax(np.where(np.isnan(means), -np.inf, means)))


def first_untried(counts: np.ndarray) -> int | None:
    """The first action (in label order) never chosen, or None when all were."""
    untried = np.flatnonzero(np.asarray(counts) == 0)
    return int(untried[0]) if len(untried) else None


def prompt_ucb_values(prompt: BanditPrompt) -> np.ndarray:
    """The correct UCB values for this prompt's history (the one formula, ``ucb_values``)."""
    counts, sums = prompt.statistics()
    c = prompt.ucb_c if prompt.ucb_c is not None else DEFAULT_UCB_C
    return ucb_values(counts, sums, len(prompt.history), c)


class PlantedModel(ABC):
    """A TextGenerator that acts by a fixed rule on what it reads in the prompt.

    Subclasses give :meth:`choose` (the action) and may override
    :meth:`action_logits` (what :meth:`score` normalises); by default the
    scores peak on the chosen action with a margin of ``confidence`` nats.
    ``writes_ucb_values``: when a prompt asks for ``<ucb_values>``, write the
    correct values before the answer.
    """

    name = "planted"
    writes_ucb_values = False
    confidence = 4.0

    @abstractmethod
    def choose(self, prompt: BanditPrompt) -> int:
        """The action this model takes after the prompt's history."""

    def action_logits(self, prompt: BanditPrompt) -> np.ndarray:
        logits = np.zeros(prompt.n_arms)
        logits[self.choose(prompt)] = self.confidence
        return logits

    def answer(self, prompt: BanditPrompt) -> str:
        """The full reply: the UCB block when asked for and written, then ``ACTION=label``."""
        action = format_action(prompt.labels[self.choose(prompt)])
        if self.writes_ucb_values and prompt.ucb_c is not None:
            return f"{format_ucb_values(prompt.labels, prompt_ucb_values(prompt))}\n{action}"
        return action

    def generate(
        self, prompts: Sequence[Chat], config: GenerationConfig, seeds: Seeds = None
    ) -> list[Generation]:
        return [Generation(self.answer(read_prompt(chat))) for chat in prompts]

    def score(
        self, prompts: Sequence[Chat], continuations: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """Log-softmax over the candidates of the logits of the actions they name."""
        if len(prompts) != len(continuations):
            raise ConfigError(
                f"got {len(continuations)} candidate lists for {len(prompts)} prompts; "
                "give one list per prompt"
            )
        rows = []
        for chat, candidates in zip(prompts, continuations, strict=True):
            prompt = read_prompt(chat)
            logits = self.action_logits(prompt)
            named = [parse_action(text, prompt.labels).index for text in candidates]
            chosen = [UNRECOGNISED_LOGIT if i is None else logits[i] for i in named]
            rows.append([float(v) for v in log_softmax(np.asarray(chosen, dtype=float))])
        return rows


class FrequencyBiasedModel(PlantedModel):
    """Copies the most frequent action in its context (ties: first in label order).

    Scores are a softmax of ``sharpness * count``: the more often an action is
    repeated, the more certain the model, so the entropy of its action
    distribution falls with repetitions, the signature the frequency bias probe
    looks for. The default sharpness spreads that fall over the probe's 0-100
    repetitions instead of collapsing after a handful.
    """

    name = "planted:frequency-biased"

    def __init__(self, sharpness: float = 0.1) -> None:
        if not (isinstance(sharpness, int | float) and math.isfinite(sharpness) and sharpness > 0):
            raise ConfigError(f"sharpness must be a positive number, got {sharpness!r}")
        self.sharpness = float(sharpness)

    def action_logits(self, prompt: BanditPrompt) -> np.ndarray:
        counts, _ = prompt.statistics()
        return self.sharpness * counts.astype(float)

    def choose(self, prompt: BanditPrompt) -> int:
        counts, _ = prompt.statistics()
        return int(np.argmax(counts))


def prompt_generator(prompt: BanditPrompt, seed: int) -> np.random.Generator:
    """A generator seeded by ``seed`` and the history shown: one prompt, one draw."""
    history = ";".join(f"{step.action}:{step.reward:.2f}" for step in prompt.history)
    digest = hashlib.sha256(f"{seed}|{prompt.n_arms}|{history}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class UniformModel(PlantedModel):
    """Ignores the history: a uniformly random action (the same one for the same prompt)."""

    name = "planted:uniform"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def choose(self, prompt: BanditPrompt) -> int:
        return int(prompt_generator(prompt, self.seed).integers(prompt.n_arms))


class ShareCopierModel(UniformModel):
    """Copies the most frequent action (ties: first in label order) with a probability
    equal to its share of the history, else acts as :class:`UniformModel`: the more an
    action is repeated, the more it is copied, as in the frequency bias of small LLMs."""

    name = "planted:share-copier"

    def choose(self, prompt: BanditPrompt) -> int:
        counts, _ = prompt.statistics()
        draw = prompt_generator(prompt, self.seed)
        if counts.sum() > 0 and draw.random() < counts.max() / counts.sum():
            return int(np.argmax(counts))
        return int(draw.integers(prompt.n_arms))


class GreedyModel(PlantedModel):
    """Tries each arm once (first untried in label order), then the best empirical mean.

    ``try_all_first=False`` skips the tries: pure exploitation from the first
    step (the first label when nothing is tried), which the frequency probe
    classifies as greedy even on short prefixes where most arms are untried.
    """

    def __init__(self, try_all_first: bool = True) -> None:
        self.try_all_first = try_all_first
        self.name = "planted:greedy" if try_all_first else "planted:greedy-no-tries"

    def choose(self, prompt: BanditPrompt) -> int:
        counts, sums = prompt.statistics()
        untried = first_untried(counts)
        if self.try_all_first and untried is not None:
            return untried
        return best_mean_action(counts, sums)


class KnowingButGreedyModel(PlantedModel):
    """Writes the correct UCB values when asked, then acts greedily: the knowing-doing gap.

    The action is the best empirical mean among tried actions (the first label
    when nothing is tried), whatever the values it just wrote say.
    """

    name = "planted:knowing-but-greedy"
    writes_ucb_values = True

    def choose(self, prompt: BanditPrompt) -> int:
        return best_mean_action(*prompt.statistics())


class UCBModel(PlantedModel):
    """Writes the correct UCB values when asked and acts on them: argmax, first untried first.

    Without a UCB request in the prompt it uses the reference constant c = 2.
    """

    name = "planted:ucb"
    writes_ucb_values = True

    def choose(self, prompt: BanditPrompt) -> int:
        # np.argmax takes the first maximum: the first untried arm (+inf) when there is one.
        return int(np.argmax(prompt_ucb_values(prompt)))
