"""The knowing-doing probe (SPEC.md section 4): knowing the UCB choice, yet not acting on it.

Recipe: histories of several lengths in a bandit (random-policy ones, or, the
paper's protocol, prefixes of episodes the agent itself played: ``episodes``); the agent's
chain-of-thought context (``build_context``) followed by a request to act by
UCB: compute every action's value ``mean + sqrt(c ln t / n)`` (t = steps so
far, n = the action's count, inf for an action never chosen), write them all
inside ``<ucb_values>...</ucb_values>`` as ``label: value`` pairs, then answer
``ACTION=X`` for the highest value. One batched ``generate`` call per chunk.

- Knowing: the written values parse (every action exactly once) and every
  action tied for the highest WRITTEN value is among the argmaxes of the TRUE
  UCB values, recomputed from the history with ``ucb_values(..., c=ucb_c)``
  (all untried actions tie at +inf). A written tie that includes a wrong
  action did not single out the argmax, so it is not knowing. Values that
  cannot be read (no block, an action missing, garbage) are NOT knowing and
  are counted in ``unparsed``; such records are never dropped.
- Doing: the answer read by ``parse_action``: "optimal" when it is among the
  true UCB argmaxes, else "greedy" when it is among the best empirical means
  of the tried actions (``metrics.greedy_actions``; greedy that is also
  optimal counts as optimal), else "other". An invalid answer is "other" and
  counted in ``invalid_actions``.
- The 2x3 table (knowing correct / incorrect x optimal / greedy / other) is in
  percent of ALL records, so its six cells sum to 100.
- True values use the rewards as SHOWN (two decimals), like the frequency
  probe: a model that computes exactly from its prompt is judged correct.
- JSON has no infinity: in ``to_dict`` an infinite value (true or written) is
  written as null.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from agentbench.agent.context import ContextSettings, build_context
from agentbench.agent.parsing import PLACEHOLDER, format_action, normalise_label, parse_action
from agentbench.analysis.frequency_bias import (
    PROBE_ENV_ID,
    ProbeRun,
    bandit_env,
    batched,
    check_positive,
    play_actions,
    progress_bar,
    shown_statistics,
)
from agentbench.confidence_bounds import DEFAULT_UCB_C, ucb_values
from agentbench.envs import text_env
from agentbench.envs.protocol import TextEnv
from agentbench.errors import ConfigError
from agentbench.io import json_number
from agentbench.metrics import (
    CONFIDENCE,
    Estimate,
    empirical_means,
    greedy_actions,
    pass_at_k,
    t_interval,
)
from agentbench.models.interface import Chat, GenerationConfig, TextGenerator
from agentbench.records import Episode, Step

UCB_OPEN, UCB_CLOSE = "<ucb_values>", "</ucb_values>"
UCB_BONUS = "sqrt({c:g} ln t / n)"  # as the instruction writes the exploration bonus
UCB_INSTRUCTION = (
    "Choose this step's action by the UCB rule. The UCB value of an action is its mean "
    "reward + " + UCB_BONUS + ", where t = {t} is the number of steps so far and n is "
    "the number of times the action was chosen; an action never chosen has the value inf, "
    "so untried actions come first. Write the UCB value of every action inside "
    f"{UCB_OPEN}...{UCB_CLOSE} as label: value pairs separated by commas. Then end your "
    "answer with {example} for the action with the highest UCB value."
)
DOING_CLASSES = ("optimal", "greedy", "other")
DEFAULT_HISTORY_LENGTHS = (5, 10, 20, 30, 40)

_BLOCK = re.compile(
    re.escape(UCB_OPEN) + r"(.*?)" + re.escape(UCB_CLOSE), re.IGNORECASE | re.DOTALL
)
_ENTRY_SEPARATORS = re.compile(r"[,;\n\r]")
_ENTRY = re.compile(r"^(?P<label>[^:=]+?)\s*[:=]\s*(?P<value>.*)$", re.DOTALL)
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$", re.IGNORECASE)
_INFINITY = re.compile(r"^(?P<sign>[+-]?)(?:inf|infinity|∞)$", re.IGNORECASE)
_WRAPPERS = " \t*_`\"'"  # markdown and quotes around a label or a value
_BULLETS = "-•·"  # list markers before a label


# ---------------------------------------------------------------- the <ucb_values> format


def format_ucb_values(labels: Sequence[str], values: Sequence[float]) -> str:
    """A ``<ucb_values>`` block: ``label: value`` pairs, ``inf`` for untried actions.

    Four decimals, so rounding does not turn distinct values into a written tie.
    ``parse_ucb_values(format_ucb_values(labels, v), labels)`` reads ``v`` back
    up to that rounding.
    """
    pairs = ", ".join(
        f"{label}: {_format_value(v)}" for label, v in zip(labels, values, strict=True)
    )
    return f"{UCB_OPEN}{pairs}{UCB_CLOSE}"


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


@dataclass(frozen=True)
class UCBReading:
    """The values read from an answer, one per action in label order, or None and why not."""

    values: tuple[float, ...] | None
    reason: str

    @property
    def parsed(self) -> bool:
        return self.values is not None


def parse_ucb_values(text: str, labels: Sequence[str]) -> UCBReading:
    """The last complete ``<ucb_values>`` block of ``text``, read strictly but tolerantly.

    Tolerated: ``label: value`` or ``label = value``; pairs separated by commas,
    semicolons or newlines; labels in any case or width (``normalise_label``),
    wrapped in markdown or quotes, after a list bullet; values with a sign,
    decimals and an exponent, ``inf`` / ``infinity`` / ``∞`` (signed or not),
    a Unicode minus. Not tolerated (the reading fails): a missing closing tag,
    an entry without a separator, a value that is not one number (arithmetic,
    words, units), an unknown label, an action given two different values, an
    action missing.
    """
    blocks = _BLOCK.findall(unicodedata.normalize("NFKC", text or ""))
    if not blocks:
        return UCBReading(None, f"no {UCB_OPEN}...{UCB_CLOSE} block")
    index = {normalise_label(label): i for i, label in enumerate(labels)}
    values: dict[int, float] = {}
    for piece in _ENTRY_SEPARATORS.split(blocks[-1]):
        if not piece.strip():
            continue
        entry = _ENTRY.match(piece.strip())
        if entry is None:
            return UCBReading(None, f"entry {piece.strip()!r} is not 'label: value'")
        label = normalise_label(
            entry.group("label").strip(_WRAPPERS).lstrip(_BULLETS).strip(_WRAPPERS)
        )
        if label not in index:
            return UCBReading(None, f"unknown action {entry.group('label').strip()!r}")
        value = _read_value(entry.group("value"))
        if value is None:
            return UCBReading(None, f"value {entry.group('value').strip()!r} is not a number")
        action = index[label]
        if action in values and values[action] != value:
            return UCBReading(None, f"action {labels[action]!r} has two values")
        values[action] = value
    missing = [labels[a] for a in range(len(labels)) if a not in values]
    if missing:
        return UCBReading(None, f"no value for {', '.join(missing)}")
    return UCBReading(tuple(values[a] for a in range(len(labels))), "ok")


def _read_value(raw: str) -> float | None:
    text = raw.strip().rstrip(".").strip(_WRAPPERS).replace("\u2212", "-")
    if _NUMBER.match(text):
        return float(text)
    infinity = _INFINITY.match(text)
    if infinity:
        return -math.inf if infinity.group("sign") == "-" else math.inf
    return None


# ---------------------------------------------------------------- judging one answer


def argmax_set(values: Sequence[float] | np.ndarray) -> set[int]:
    """All indices tied for the highest value (up to float rounding; +inf ties with +inf)."""
    values = np.asarray(values, dtype=float)
    return {int(i) for i in np.flatnonzero(np.isclose(values, values.max(), rtol=1e-9, atol=1e-12))}


def classify_action(action: int | None, optimal: set[int], greedy: set[int]) -> str:
    """The class of an action: optimal wins over greedy; None (invalid) is other."""
    if action is None:
        return "other"
    if action in optimal:
        return "optimal"
    if action in greedy:
        return "greedy"
    return "other"


def knowing_doing_prompt(env: TextEnv, history: Sequence[Step], ucb_c: float) -> Chat:
    """The agent's chain-of-thought context (whole history) with the UCB request appended."""
    chat = build_context(env, history, ContextSettings(cot=True, history_length=None))
    request = UCB_INSTRUCTION.format(c=ucb_c, t=len(history), example=format_action(PLACEHOLDER))
    last = chat[-1]
    return [*chat[:-1], {"role": last["role"], "content": f"{last['content']}\n\n{request}"}]


# ---------------------------------------------------------------- result


@dataclass(frozen=True)
class KnowingDoingRecord:
    """One history, the answer, and how it was judged."""

    history_length: int
    true_ucb: tuple[float, ...]
    written: tuple[float, ...] | None  # None: the values could not be read
    knowing: bool
    action: int | None  # None: no valid action in the answer
    doing: str
    text: str
    labels: tuple[str, ...]
    history: int = 0  # which history (several records per history when sampled)

    def to_dict(self) -> dict[str, Any]:
        written = (
            None
            if self.written is None
            else {label: json_number(v) for label, v in zip(self.labels, self.written, strict=True)}
        )
        return {
            "history_length": self.history_length,
            "true_ucb": [json_number(v) for v in self.true_ucb],
            "written": written,
            "knowing": self.knowing,
            "action": self.action,
            "doing": self.doing,
            "text": self.text,
            "history": self.history,
        }


@dataclass
class KnowingDoingResult(ProbeRun):
    """All judged records, with the 2x3 table and the rates computed from them."""

    ucb_c: float
    records: list[KnowingDoingRecord]
    histories: str = "random"  # or "episodes of AGENT": prefixes of its own trajectories
    samples: int = 1  # answers sampled per history
    ks: tuple[int, ...] = ()  # the k of pass@k and maj@k (samples > 1)

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def knowing_rate(self) -> float:
        """Share (0-1) of records whose written values name a true UCB argmax."""
        return sum(r.knowing for r in self.records) / self.n if self.n else math.nan

    @property
    def unparsed(self) -> int:
        return sum(r.written is None for r in self.records)

    @property
    def invalid_actions(self) -> int:
        return sum(r.action is None for r in self.records)

    def table(self) -> dict[str, dict[str, float | None]]:
        """Percent of ALL records per (knowing correct/incorrect, doing) cell; sums to 100."""
        table: dict[str, dict[str, float | None]] = {}
        for row, knowing in (("correct", True), ("incorrect", False)):
            table[row] = {
                doing: (
                    100.0
                    * sum(r.knowing == knowing and r.doing == doing for r in self.records)
                    / self.n
                    if self.n
                    else None
                )
                for doing in DOING_CLASSES
            }
        return table

    def at_k(self, confidence: float = CONFIDENCE) -> dict[str, dict[str, dict[str, Estimate]]]:
        """With several samples per history: for knowing (the written values single out a
        true UCB argmax) and for acting UCB-optimally, pass@k (at least one of k samples;
        unbiased from all of them) and maj@k (more than half of the first k samples), each
        a mean over histories with its interval; empty with one sample."""
        if self.samples < 2:
            return {}
        by_history: dict[int, list[KnowingDoingRecord]] = {}
        for record in self.records:
            by_history.setdefault(record.history, []).append(record)
        judged = {"knowing": lambda r: r.knowing, "optimal": lambda r: r.doing == "optimal"}
        result: dict[str, dict[str, dict[str, Estimate]]] = {}
        for name, is_right in judged.items():
            rows = [[bool(is_right(r)) for r in group] for group in by_history.values()]
            result[name] = {
                "pass": {
                    str(k): t_interval(
                        [pass_at_k(len(row), sum(row), k) for row in rows], confidence
                    )
                    for k in self.ks
                },  # fmt: skip
                "maj": {
                    str(k): t_interval([float(sum(row[:k]) > k / 2) for row in rows], confidence)
                    for k in self.ks
                },  # fmt: skip
            }
        return result

    def doing_shares(self) -> dict[str, float | None]:
        """Percent of ALL records per doing class (the table's column sums)."""
        table = self.table()
        return {
            doing: None
            if table["correct"][doing] is None
            else table["correct"][doing] + table["incorrect"][doing]  # type: ignore[operator]
            for doing in DOING_CLASSES
        }

    def to_dict(self) -> dict[str, Any]:
        """The probe's JSON record; infinite UCB values are null (JSON has no inf)."""
        return {
            **self.header("knowing_doing"),
            "histories": self.histories,
            "ucb_c": self.ucb_c,
            "n": self.n,
            "table": self.table(),
            "doing": self.doing_shares(),
            "knowing_rate": json_number(self.knowing_rate),
            "unparsed": self.unparsed,
            "invalid_actions": self.invalid_actions,
            "records": [r.to_dict() for r in self.records],
            **(
                {
                    "samples": self.samples,
                    "at_k": {
                        name: {m: {k: e.to_dict() for k, e in row.items()} for m, row in by.items()}
                        for name, by in self.at_k().items()
                    },
                }
                if self.samples > 1
                else {}
            ),
        }


def judge(
    history: Sequence[Step],
    labels: Sequence[str],
    text: str,
    ucb_c: float,
    legal: Sequence[int] | None = None,
) -> KnowingDoingRecord:
    """Judge one answer against the history it was given (see the module docstring)."""
    counts, sums = shown_statistics(history, len(labels))
    true = ucb_values(counts, sums, len(history), ucb_c)
    optimal = argmax_set(true)
    reading = parse_ucb_values(text, labels)
    knowing = reading.values is not None and argmax_set(reading.values) <= optimal
    parsed = parse_action(text, labels, legal)
    action = parsed.index if parsed.valid else None
    doing = classify_action(action, optimal, greedy_actions(empirical_means(counts, sums)))
    return KnowingDoingRecord(
        len(history),
        tuple(float(v) for v in true),
        reading.values,
        knowing,
        action,
        doing,
        text,
        tuple(labels),
    )


# ---------------------------------------------------------------- the probe


def run_knowing_doing_probe(
    generator: TextGenerator,
    env_id: str = PROBE_ENV_ID,
    n_histories: int = 100,
    history_lengths: Sequence[int] = DEFAULT_HISTORY_LENGTHS,
    budget: int = 256,
    ucb_c: float = DEFAULT_UCB_C,
    seed: int = 0,
    temperature: float = 0.0,
    batch_size: int = 32,
    progress: bool = True,
    episodes: Sequence[Episode] | None = None,
    samples: int = 1,
    ks: Sequence[int] = (),
) -> KnowingDoingResult:
    """Ask for UCB values and a UCB action on ``n_histories`` histories; judge each.
    With ``samples`` > 1 (at a ``temperature`` > 0), every history gets that many answers,
    and the result adds pass@k and maj@k of knowing and of optimal acting for ``ks``.

    History lengths cycle through ``history_lengths`` (each below the env's
    horizon); ``budget`` is the generation budget in tokens; generation seeds
    come from ``seed``, so sampling (``temperature`` > 0) is reproducible.
    Histories are random-policy plays, or with ``episodes`` (one agent's episodes on
    ``env_id``, made without settings) the first steps of those episodes, taken in
    turn: the agent's own trajectories, as the paper probes them.
    """
    check_positive("n_histories", n_histories)
    check_positive("budget", budget)
    check_positive("batch_size", batch_size)
    check_positive("samples", samples)
    ks = tuple(sorted({check_positive("k", k) for k in ks})) if samples > 1 else ()
    if samples > 1 and (temperature <= 0 or not ks or ks[-1] > samples):
        raise ConfigError(
            f"{samples} samples per history need a temperature > 0 (got {temperature}) and "
            f"ks between 1 and {samples} (got {list(ks)})"
        )
    if not (isinstance(ucb_c, int | float) and math.isfinite(ucb_c) and ucb_c >= 0):
        raise ConfigError(f"ucb_c must be a number >= 0, got {ucb_c!r}")
    env = bandit_env(env_id)
    lengths = check_history_lengths(history_lengths, env)
    rng = np.random.default_rng(seed)
    own = own_episodes(episodes, env_id, max(lengths)) if episodes is not None else None
    cases: list[tuple[int, list[Step], Chat, int]] = []
    view: TextEnv | None = None
    for i, (view, history) in enumerate(probe_histories(env, n_histories, lengths, rng, own)):
        chat = knowing_doing_prompt(view, history, ucb_c)
        cases += [(i, history, chat, int(rng.integers(2**31))) for _ in range(samples)]
    env.close()
    assert view is not None  # n_histories >= 1
    labels, legal = view.action_labels(), view.legal_actions()

    config = GenerationConfig(max_new_tokens=budget, temperature=temperature)
    records: list[KnowingDoingRecord] = []
    bar = progress_bar(len(cases), f"knowing-doing {generator.name}", progress)
    for chunk in batched(cases, batch_size):
        generations = generator.generate(
            [case[2] for case in chunk], config, [case[3] for case in chunk]
        )
        for (i, history, _, _), generation in zip(chunk, generations, strict=True):
            record = judge(history, labels, generation.text, ucb_c, legal)
            records.append(replace(record, history=i))
        bar.update(len(chunk))
    bar.close()
    histories = "random" if own is None else f"episodes of {own[0].agent}"
    return KnowingDoingResult(
        generator.name, env_id, int(seed), float(ucb_c), records, histories, samples, ks
    )


def check_history_lengths(history_lengths: Sequence[int], env: Any) -> list[int]:
    """The history lengths as integers, each below ``env``'s horizon; else a ConfigError."""
    horizon = int(env.unwrapped.spec_params.horizon)
    lengths = [int(length) for length in history_lengths]
    if not lengths or min(lengths) < 0 or max(lengths) >= horizon:
        raise ConfigError(
            f"history_lengths must be non-empty integers in 0..{horizon - 1} (the env's "
            f"horizon is {horizon}), got {list(history_lengths)}"
        )
    return lengths


def probe_histories(
    env: Any,
    n_histories: int,
    lengths: Sequence[int],
    rng: np.random.Generator,
    episodes: Sequence[Episode] | None = None,
) -> Iterator[tuple[TextEnv, list[Step]]]:
    """(text view, history) for each of ``n_histories`` histories, lengths in turn; ``env``
    is left in the history's episode (its true means). Random play draws an env seed and
    the actions from ``rng``, lazily, so a caller may draw from it between histories;
    with ``episodes``, the first steps of each in turn, in the episode's own env."""
    n_arms = int(env.action_space.n)
    for i in range(n_histories):
        length = lengths[i % len(lengths)]
        if episodes is None:
            env_seed = int(rng.integers(2**31))
            actions = rng.integers(n_arms, size=length)
            yield play_actions(env, actions, env_seed)
        else:
            played = episodes[i % len(episodes)]
            env.reset(seed=played.seed)  # its labels, instruction and means
            yield text_env(env), played.steps[:length]


def own_episodes(episodes: Sequence[Episode], env_id: str, longest: int) -> list[Episode]:
    """The episodes whose prefixes become histories: one agent's, on ``env_id`` as
    registered, each at least ``longest`` steps long; in seed order."""
    own = sorted((ep for ep in episodes if ep.env_name == env_id), key=lambda ep: ep.seed)
    agents = sorted({ep.agent for ep in own})
    if not own:
        raise ConfigError(f"no episodes on {env_id} (made without settings) to take histories from")
    if len(agents) > 1:
        raise ConfigError(
            f"the episodes on {env_id} are of several agents ({', '.join(agents)}); "
            "give one agent's"
        )
    short = [ep.seed for ep in own if len(ep.steps) < longest]
    if short:
        raise ConfigError(
            f"episodes of seeds {short} have fewer than {longest} steps, the longest history "
            "asked for"
        )
    return own
