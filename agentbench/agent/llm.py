"""The chain-of-thought LLM agent and its exploration mechanisms (SPEC.md section 2).

One ``act`` call makes one batched ``generate`` call for all envs that need
the model this step (plus one more for self-correction), never one call per
env. Mechanisms that decide without the model (try-all, epsilon-greedy) answer
with a template rationale ending in ``ACTION=X``, so their steps read like the
model's own in the records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from agentbench.agent.context import (
    TURNS_WITH_SHUFFLED_LABELS,
    ContextSettings,
    build_context,
    shuffled_labels,
)
from agentbench.agent.demonstrations import demonstrations_text
from agentbench.agent.interface import Decision, Turn
from agentbench.agent.parsing import PLACEHOLDER, format_action, parse_action
from agentbench.envs import ARM_FAMILIES, BANDIT_FAMILY, CONTEXTUAL_FAMILY, get_preset
from agentbench.errors import ConfigError
from agentbench.models.interface import (
    Chat,
    Generation,
    GenerationConfig,
    TextGenerator,
    UnsupportedOperation,
)
from agentbench.settings import config_from_dict, setting

DIRECT_BUDGET = 16  # generation budget without CoT: only ACTION=X (SPEC.md 2)
# Families whose actions are interchangeable arms: there "untried actions first"
# and relabelling the actions make sense (not for board cells).
TRY_ALL_RATIONALE = (
    "I have not tried {label} yet, and I try every action once before choosing among them. {action}"
)
EPSILON_RATIONALE = "I explore this step with an action chosen at random. {action}"
# extras["mechanism"] of the decisions answered from a template, without the model
GUIDE_FAMILIES = {"ucb": BANDIT_FAMILY, "linucb": CONTEXTUAL_FAMILY}  # what each guide fits
TRY_ALL, EPSILON = "try-all", "epsilon"
DIRECT_CHOICE = "direct choice"  # why a direct_choice step was forced (no text was written)
TEMPLATE_MECHANISMS = (TRY_ALL, EPSILON)
SELF_CORRECTION_PROMPT = (
    "Check your reasoning and your answer above. If you find a mistake, correct it. "
    "End with {example}, where X is one of the actions: {labels}."
)


@dataclass(frozen=True)
class LLMAgentSettings:
    """Every knob of the LLM agent, with its default and where it comes from."""

    cot: bool = setting(True, "think briefly, then ACTION=X (SPEC.md 2); False: ACTION=X only")
    budget: int = setting(256, "generation budget G with CoT (ablations: 16, 64, 256, 512, 2048)")
    history_length: int | None = setting(50, "C: past transitions in the context; None = all")
    temperature: float = setting(0.0, "0 = greedy (evaluation); rollouts for training use 1.0")
    top_p: float = setting(
        1.0,
        (
            "nucleus sampling: sample among the most likely tokens whose probabilities sum to "
            "top_p; 1.0 = off"
        ),
    )
    try_all: bool = setting(False, "play every untried action first (bandits), template rationale")
    epsilon: float = setting(
        0.0, "epsilon-greedy mechanism: random action w.p. epsilon (SPEC: 0.1)"
    )
    randomise_labels: bool = setting(False, "shuffle action labels every step (bandits), map back")
    summary: bool = setting(False, "append per-action count and mean reward to the context")
    demonstrations: int = setting(
        0,
        "k whole episodes of UCB on the same multi-armed bandit and settings (other seeds), "
        "shown after the task instruction (BanditBench's few-shot demonstrations); 0 = none",
    )
    guide: str | None = setting(
        None,
        '"ucb" (bandits) or "linucb" (contextual bandits): append every action\'s value as the '
        "algorithm computes it from the history (BanditBench's algorithm-guided summary); "
        "the model still decides",
    )
    context_layout: str = setting(
        "single",
        '"single": one user message holding the instructions and the history (the paper\'s); '
        '"turns": one exchange per step (the action as the assistant\'s answer), so each '
        "prompt extends the last one while the window of C steps holds (a prefix cache shares "
        "all of it; the single message shares all but its question, in prompts half as long)",
    )
    self_correction: bool = setting(False, "a second pass sees the first answer and may revise it")
    self_consistency: int = setting(1, "k samples with majority vote (SPEC: 16); 1 = off")
    consistency_temperature: float = setting(1.0, "sampling temperature of the k samples")
    return_token: str | None = setting(
        None, 'return-conditioned RL: "Target return: X." in the context'
    )
    answer_forcing: bool = setting(
        False,
        (
            "off keeps the paper's protocol; on: an answer with no legal ACTION= (budget spent, "
            "nothing parseable, an illegal move) gets the answer prefix appended and a legal "
            "label chosen by the model's own log-probabilities (argmax at temperature 0, "
            "sampled at the agent's temperature otherwise); the step is recorded as forced"
        ),
    )
    direct_choice: bool = setting(
        False,
        (
            "with answer_forcing and cot=False: write no text; every step appends ACTION= "
            "to the prompt and forces the label (a choice among the legal labels by the "
            "model's log-probabilities: one scoring pass a step, no generation; PPO then "
            "trains the label alone)"
        ),
    )

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ConfigError(f"budget must be at least 1 token, got {self.budget}")
        if self.history_length is not None and self.history_length < 0:
            raise ConfigError(f"history_length must be >= 0 or None, got {self.history_length}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must lie in [0, 1], got {self.epsilon}")
        if self.self_consistency < 1:
            raise ConfigError(f"self_consistency must be at least 1, got {self.self_consistency}")
        if self.temperature < 0 or self.consistency_temperature < 0:
            raise ConfigError("temperatures must be >= 0")
        if self.demonstrations < 0:
            raise ConfigError(f"demonstrations must be >= 0, got {self.demonstrations}")
        if self.context_layout == "turns" and self.randomise_labels:
            raise ConfigError(TURNS_WITH_SHUFFLED_LABELS)
        if self.demonstrations and self.randomise_labels:
            raise ConfigError(
                "demonstrations show the env's own labels; they cannot be combined with "
                "randomise_labels, which shows others every step"
            )
        if self.direct_choice and (self.cot or not self.answer_forcing):
            raise ConfigError(
                "direct_choice chooses the label by answer forcing right after the prompt: "
                "it needs answer_forcing = true and cot = false"
            )
        if self.direct_choice and (self.self_consistency > 1 or self.self_correction):
            raise ConfigError(
                "direct_choice writes no answer, so there is nothing to vote on "
                "(self_consistency) or to revise (self_correction)"
            )
        _ = self.context  # ContextSettings checks return_token, guide and layout

    @property
    def context(self) -> ContextSettings:
        return ContextSettings(cot=self.cot, history_length=self.history_length,
                               summary=self.summary, return_token=self.return_token,
                               guide=self.guide, layout=self.context_layout)  # fmt: skip

    @property
    def max_new_tokens(self) -> int:
        return self.budget if self.cot else DIRECT_BUDGET

    def changed(self) -> dict[str, Any]:
        """The settings that differ from the defaults (for the agent's name)."""
        default = LLMAgentSettings()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}  # fmt: skip


@dataclass
class _Pending:
    """A turn that needs the model, with what is needed to read its answer."""

    index: int  # position in the batch of turns
    chat: Chat
    labels: list[str]  # action a is shown as labels[a] (shuffled under randomisation)


class LLMAgent:
    """Plays any text env through a :class:`TextGenerator`."""

    def __init__(
        self,
        generator: TextGenerator,
        settings: LLMAgentSettings = LLMAgentSettings(),
        name: str | None = None,
    ) -> None:
        self.generator = generator
        self.settings = settings
        self.name = name or f"llm:{generator.name}"

    def supports(self, family: str) -> bool:
        return True

    def resolved_settings(self) -> dict[str, Any]:
        """The model and every setting, defaults included (see ``resolved_settings``)."""
        return {"model": self.generator.name, **asdict(self.settings)}

    # -- one decision step for a batch of envs ---------------------------------
    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        decisions: list[Decision | None] = [None] * len(turns)
        pending: list[_Pending] = []
        for i, turn in enumerate(turns):
            decisions[i] = self._without_model(turn)
            if decisions[i] is None:
                pending.append(self._prepare(i, turn))
        if pending:
            for item, decision in zip(pending, self._ask_model(pending, turns), strict=True):
                decisions[item.index] = decision
        return [d for d in decisions if d is not None]

    def _without_model(self, turn: Turn) -> Decision | None:
        """Try-all and epsilon-greedy answer from a template, without the model."""
        labels = turn.env.action_labels()
        legal = turn.env.legal_actions()
        family = _family(turn)
        if self.settings.try_all and family in ARM_FAMILIES:
            tried = {step.action for step in turn.history}
            untried = [a for a in legal if a not in tried]
            if untried:
                action = int(turn.rng.choice(untried))
                text = TRY_ALL_RATIONALE.format(label=labels[action],
                                                action=format_action(labels[action]))  # fmt: skip
                return Decision(action, text, {"mechanism": TRY_ALL})
        if self.settings.epsilon > 0 and turn.rng.random() < self.settings.epsilon:
            action = int(turn.rng.choice(legal))
            text = EPSILON_RATIONALE.format(action=format_action(labels[action]))
            return Decision(action, text, {"mechanism": EPSILON})
        return None

    def _prepare(self, index: int, turn: Turn) -> _Pending:
        labels = turn.env.action_labels()
        guide = self.settings.guide
        if guide is not None and _family(turn) != GUIDE_FAMILIES[guide]:
            raise ConfigError(
                f"the {guide} guide is for {GUIDE_FAMILIES[guide]!r} envs ("
                f"{'multi-armed' if guide == 'ucb' else 'contextual'} bandits); {turn.env_id} "
                f"is of family {_family(turn)!r}"
            )
        if not self.settings.randomise_labels:
            k = self.settings.demonstrations
            shown = demonstrations_text(turn.env, _family(turn), k) if k else ""
            chat = build_context(turn.env, turn.history, self.settings.context,
                                 observation=turn.observation, demonstrations=shown)  # fmt: skip
            return _Pending(index, chat, list(labels))
        if _family(turn) != BANDIT_FAMILY:
            raise ConfigError(
                f"randomise_labels needs interchangeable action labels (multi-armed "
                f"bandits); {turn.env_id} names its actions"
            )
        # Action a is shown as shown[a] this step, in the history too; the model's
        # answer is parsed against the shown labels, so its index is the real action.
        shown = shuffled_labels(labels, turn.rng)
        chat = build_context(turn.env, turn.history, self.settings.context, display_labels=shown,
                             observation=turn.observation)  # fmt: skip
        return _Pending(index, chat, shown)

    def _ask_model(self, pending: list[_Pending], turns: Sequence[Turn]) -> list[Decision]:
        settings = self.settings
        if settings.direct_choice:
            # No text: every answer is empty, so answer forcing chooses right after the prompt.
            empty = [self._read(item, turns[item.index], Generation("")) for item in pending]
            for decision in empty:
                decision.extras["parse"] = DIRECT_CHOICE
            return self._force_answers(pending, turns, empty)
        k = settings.self_consistency
        temperature = settings.consistency_temperature if k > 1 else settings.temperature
        config = GenerationConfig(settings.max_new_tokens, temperature, settings.top_p)
        chats = [item.chat for item in pending for _ in range(k)]
        seeds = [int(turns[item.index].rng.integers(2**31)) for item in pending for _ in range(k)]
        generations = self.generator.generate(chats, config, seeds)
        decisions = []
        for n, item in enumerate(pending):
            turn = turns[item.index]
            samples = generations[n * k : (n + 1) * k]
            if k == 1:
                decisions.append(self._read(item, turn, samples[0]))
            else:
                decisions.append(self._vote(item, turn, samples))
        if settings.self_correction:
            decisions = self._self_correct(pending, turns, decisions, config)
        if settings.answer_forcing:
            decisions = self._force_answers(pending, turns, decisions)
        return decisions

    def _read(self, item: _Pending, turn: Turn, generation: Generation) -> Decision:
        """Parse one answer into a Decision (None: nothing usable, the runner flags it)."""
        parsed = parse_action(generation.text, item.labels)
        action = parsed.index
        extras = {"generation": generation, "prompt": item.chat, "parse": parsed.reason}
        if self.settings.randomise_labels:
            extras["shown_labels"] = item.labels
        return Decision(action, generation.text, extras)

    def _vote(self, item: _Pending, turn: Turn, samples: Sequence[Generation]) -> Decision:
        """Self-consistency: the most common valid answer among k samples."""
        reads = [self._read(item, turn, sample) for sample in samples]
        votes = Counter(d.action for d in reads if d.action is not None)
        if not votes:
            chosen = reads[0]
            chosen.extras["votes"] = {}
            return chosen
        top = max(votes.values())
        winners = sorted(a for a, count in votes.items() if count == top)
        action = int(winners[0] if len(winners) == 1 else turn.rng.choice(winners))
        chosen = next(d for d in reads if d.action == action)
        chosen.extras["votes"] = {int(a): int(c) for a, c in votes.items()}
        return chosen

    def _self_correct(
        self,
        pending: list[_Pending],
        turns: Sequence[Turn],
        first: list[Decision],
        config: GenerationConfig,
    ) -> list[Decision]:
        """A second pass that sees the first answer and may revise it; the final one counts."""
        chats = []
        for item, decision in zip(pending, first, strict=True):
            legal = [item.labels[a] for a in turns[item.index].env.legal_actions()]
            review = SELF_CORRECTION_PROMPT.format(example=format_action(PLACEHOLDER),
                                                   labels=", ".join(legal))  # fmt: skip
            chats.append([*item.chat, {"role": "assistant", "content": decision.text},
                          {"role": "user", "content": review}])  # fmt: skip
        seeds = [int(turns[item.index].rng.integers(2**31)) for item in pending]
        config = GenerationConfig(config.max_new_tokens, self.settings.temperature,
                                  self.settings.top_p)  # fmt: skip
        revised = self.generator.generate(chats, config, seeds)
        final = []
        for item, chat, decision, generation in zip(pending, chats, first, revised, strict=True):
            second = self._read(_Pending(item.index, chat, item.labels), turns[item.index],
                                generation)  # fmt: skip
            second.text = f"{decision.text}\n[self-correction]\n{generation.text}"
            second.extras["first_action"] = decision.action
            final.append(second)
        return final

    def _force_answers(
        self, pending: list[_Pending], turns: Sequence[Turn], decisions: list[Decision]
    ) -> list[Decision]:
        """Answer forcing: every decision without a legal action gets ``ACTION=<label>``
        appended to its text for each legal label, and one scoring pass (the
        generator's ``score``, all forced turns of the batch together) gives the model's
        log-probability of each; the label is the most likely one at temperature 0, else
        drawn from the candidates' probabilities at the agent's temperature (the turn's
        own stream). ``extras["forced"]`` records the choice's probability among the
        legal labels (at temperature 1) and why the answer was forced."""
        legal_of = [[int(a) for a in turns[item.index].env.legal_actions()] for item in pending]
        forced = [n for n, decision in enumerate(decisions) if decision.action not in legal_of[n]]
        if not forced:
            return decisions
        legal = [legal_of[n] for n in forced]
        # Each candidate continues the model's last generation in the chat it answered
        # (the review chat after self-correction).
        chats = [decisions[n].extras.get("prompt", pending[n].chat) for n in forced]
        candidates = [
            [forced_text(_generated_text(decisions[n]), pending[n].labels[a]) for a in actions]
            for n, actions in zip(forced, legal, strict=True)
        ]
        try:
            scores = self.generator.score(chats, candidates)
        except UnsupportedOperation as error:
            raise ConfigError(
                f"answer forcing scores the legal labels, which {self.generator.name} cannot "
                f"do: {error}"
            ) from None
        temperature = self.settings.temperature
        decisions = list(decisions)
        for n, actions, scored in zip(forced, legal, scores, strict=True):
            logprobs = np.asarray(scored, dtype=np.float64)
            probabilities = _softmax(logprobs)
            if temperature == 0:
                choice = int(np.argmax(probabilities))
            else:
                tempered = _softmax(logprobs / temperature)
                choice = int(turns[pending[n].index].rng.choice(len(actions), p=tempered))
            before = decisions[n]
            reason = "illegal" if before.action is not None else before.extras.get("parse")
            extras = dict(before.extras)
            label = pending[n].labels[actions[choice]]
            extras["forced"] = {"probability": float(probabilities[choice]), "reason": reason,
                                "proposed": before.action, "label": label}  # fmt: skip
            decisions[n] = Decision(actions[choice], forced_text(before.text, label), extras)
        return decisions


def forced_text(text: str, label: str) -> str:
    """The model's answer with the answer prefix and ``label`` appended (answer forcing)."""
    return forced_prefix(text) + label


def forced_prefix(text: str) -> str:
    """The model's answer up to where answer forcing writes the label: the answer
    (trailing whitespace dropped), a newline and ``ACTION=`` (just ``ACTION=`` after
    an empty answer). The text between the answer and the label is template."""
    body = text.rstrip()
    prefix = format_action("").rstrip()
    return f"{body}\n{prefix}" if body else prefix


def _generated_text(decision: Decision) -> str:
    generation = decision.extras.get("generation")
    return decision.text if generation is None else generation.text


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def _family(turn: Turn) -> str:
    return get_preset(turn.env_id).family


def settings_from_dict(options: dict[str, Any]) -> LLMAgentSettings:
    """LLMAgentSettings from suite/CLI options (the one loader: unknown keys and wrong
    types are one clear error)."""
    return config_from_dict(LLMAgentSettings, options, "LLM agent")


def describe(settings: LLMAgentSettings) -> dict[str, Any]:
    """All settings as a dict (for config files)."""
    return asdict(settings)
