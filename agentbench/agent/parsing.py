"""Reading an action out of an LLM's answer: the one home of the ``ACTION=`` format.

SPEC.md section 2: the agent ends its answer with ``ACTION=X``; the LAST match
wins; no match, or a label that is not a legal action, is an invalid action.
Prompts, log-prob scoring candidates and SFT targets are built with
:func:`format_action`, and answers are read with :func:`parse_action`, so the
format cannot drift between writing and reading.

Decisions (each one tested in ``tests/test_parsing.py``):

- The keyword is ``action`` in any case, not glued to a preceding letter or
  digit ("reaction=" does not count), optionally wrapped in markdown
  (``**ACTION**:``), followed by ``=`` or ``:``. Spaces and tabs may surround
  the separator; a NEWLINE may not follow it: ``ACTION=`` at the end of a line
  has an empty value (a truncated answer), which is invalid.
- Strictly the last keyword occurrence wins, even when its value is not a
  label: "ACTION=blue ... (format: ACTION=X)" is invalid (placeholder), as the
  spec's "the LAST match wins" says. The one exception is an occurrence that
  lies inside the label matched by an earlier occurrence on the same line (a
  movie titled "Lights, Camera, Action: Encore"): that is label text, not a
  new answer.
- Labels match exactly after normalisation (:func:`normalise_label`: NFKC,
  curly quotes made straight, casefold, whitespace collapsed), never fuzzily:
  "blu", "bluegreen", "Amelie" for "Amélie", "Toy Story" for "Toy Story (1995)"
  are unknown. Wrappers in front of the value are skipped (spaces, quotes,
  backticks, markdown ``*_~``, brackets ``[({<``) when the text there does not
  already start a label, so a label that itself starts with "(" still matches.
- The longest label the value starts with wins ("light blue" over "blue"),
  provided the label is not glued to more word characters: "13" is not "1",
  "3.5" is not "3", "blue-green" is not "blue". Anything after the label
  (closing wrappers, punctuation, an explanation) is ignored.
- ``X`` (the placeholder of the instruction), when it is not itself a label,
  gives reason "placeholder ..." and no index.
- An answer with a known label that is not in ``legal`` keeps its index, with
  ``legal=False``: the runner flags such a step invalid and illegal.

Cost is linear in the text: one regex scan without nested quantifiers, then
only a bounded window after the chosen keyword is examined (1 MB parses in
about 10-50 ms, the high end for text that NFKC must rewrite, e.g. full-width).
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from agentbench.errors import ConfigError

ACTION_KEYWORD = "ACTION"
# The placeholder the instructions use for "one of the labels" (``format_action(PLACEHOLDER)``).
PLACEHOLDER = "X"

# Keyword and separator only; the value is read by code, not by the regex, so that
# several occurrences on one line are all found and nothing backtracks.
ACTION_PATTERN = re.compile(r"(?<![^\W_])action[ \t*_`]*[:=]", re.IGNORECASE)

_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_LINE_END = re.compile(f"[{re.escape(_LINE_BREAKS)}]")
# Quotation marks that NFKC leaves alone; folded to ASCII so that “blue” and 'blue' read alike.
_QUOTE_FOLD = str.maketrans(
    {"“": '"', "”": '"', "„": '"', "‟": '"', "«": '"', "»": '"',
     "‘": "'", "’": "'", "‚": "'", "‛": "'", "‹": "'", "›": "'"}
)  # fmt: skip
# What may stand between the separator and the label (after normalisation).
_OPENERS = " \"'`*_~[({<:="
# Closers matching an opener, to cut the quoted value of an unknown label for the message.
_CLOSER_OF = {"[": "]", "(": ")", "{": "}", "<": ">", '"': '"', "'": "'", "`": "`",
              "*": "*", "_": "_", "~": "~"}  # fmt: skip
# A value glued to a label by one of these and a word character continues the label:
# "blue-green", "blue/green", "blue's"; "3.5", "3,5" (but "blue." and "3." end it).
_JOINERS = "-/'"
_DECIMAL_MARKS = ".,"
_UNKNOWN_SHOWN = 60  # characters of an unknown value quoted in the reason


@dataclass(frozen=True)
class ParsedAction:
    """What an answer said, and why it does or does not count.

    ``index`` is the action index of the label found, or None. ``label_text`` is
    the value as written after ``ACTION=`` (after NFKC; for an unknown value,
    stripped of wrappers and cut at the end of the clause), None when there was
    none. ``legal`` is False only when a known label is not among the legal
    actions given; the index is kept so the runner can tell "illegal move" from
    "unreadable answer".
    """

    index: int | None
    label_text: str | None
    reason: str
    legal: bool = True

    @property
    def valid(self) -> bool:
        """Whether the answer names a legal action: the step is not flagged invalid."""
        return self.index is not None and self.legal


def format_action(label: str) -> str:
    """The canonical answer for ``label``: ``ACTION=label``.

    Prompts, scoring candidates and SFT targets all use this, and
    ``parse_action(format_action(label), labels)`` gives ``label``'s index.
    """
    if _LINE_END.search(label):
        raise ConfigError(f"action label {label!r} spans lines; labels must be one line")
    return f"{ACTION_KEYWORD}={label}"


def normalise_label(text: str) -> str:
    """The form labels are compared in: NFKC, straight quotes, casefold, single spaces.

    Exported so that code which makes labels (e.g. from movie titles) can keep
    them distinct in exactly the sense the parser distinguishes them.
    """
    return " ".join(_fold(unicodedata.normalize("NFKC", text)).split())


def parse_action(
    text: str, labels: Sequence[str], legal: Sequence[int] | None = None
) -> ParsedAction:
    """The action the last ``ACTION=`` of ``text`` names, among ``labels``.

    ``legal`` (action indices) marks a known label outside it as illegal. See
    the module docstring for what is tolerated and what is not.
    """
    if not text:
        return ParsedAction(None, None, "no ACTION= found")
    book = _label_book(tuple(labels))
    work = unicodedata.normalize("NFKC", text)
    match, earlier = _last_keyword(work, book.window)
    if match is None:
        return ParsedAction(None, None, "no ACTION= found")
    read = _read_value(work, match.end(), book)
    if book.has_keyword:
        # The last keyword may sit inside a label an earlier keyword on the line began.
        for prior in earlier:
            if _LINE_END.search(work, prior.end(), match.start()):
                continue
            covering = _read_value(work, prior.end(), book)
            if covering.index is not None and covering.end > match.start():
                read = covering
                break
    if read.index is None:
        return ParsedAction(None, read.label_text, read.reason)
    if legal is not None and read.index not in {int(a) for a in legal}:
        return ParsedAction(read.index, read.label_text, f"illegal action {read.label_text!r}",
                            legal=False)  # fmt: skip
    return ParsedAction(read.index, read.label_text, "ok")


@dataclass(frozen=True)
class _LabelBook:
    """Labels prepared for matching: normalised, longest first."""

    by_length: tuple[tuple[str, int], ...]  # (normalised label, index), longest first
    window: int  # raw characters after the separator worth reading
    has_keyword: bool  # some label contains "action:" / "action=" itself


@lru_cache(maxsize=256)
def _label_book(labels: tuple[str, ...]) -> _LabelBook:
    """Normalise a label set once; label sets repeat every step of a run."""
    seen: dict[str, int] = {}
    for index, label in enumerate(labels):
        key = normalise_label(label)
        if not key:
            raise ConfigError(f"action label {label!r} is empty after normalisation")
        if key in seen:
            raise ConfigError(
                f"action labels {labels[seen[key]]!r} and {label!r} read the same after "
                "normalisation (case, width, spacing); labels must be distinct"
            )
        seen[key] = index
    ordered = tuple(sorted(seen.items(), key=lambda item: -len(item[0])))
    longest = max((len(key) for key in seen), default=1)
    # Generous: wrappers and runs of spaces in the raw text take room the key does not.
    window = 4 * longest + 64
    has_keyword = any(ACTION_PATTERN.search(key) for key in seen)
    return _LabelBook(ordered, window, has_keyword)


def _last_keyword(work: str, window: int) -> tuple[re.Match[str] | None, list[re.Match[str]]]:
    """The last keyword match, and the matches close enough before it to contain it in a label."""
    recent: deque[re.Match[str]] = deque()
    for match in ACTION_PATTERN.finditer(work):
        recent.append(match)
        while recent[0].end() + window < match.start():
            recent.popleft()
    if not recent:
        return None, []
    last = recent.pop()
    return last, list(recent)


@dataclass(frozen=True)
class _Read:
    """The outcome of reading one value: an index, or why not."""

    index: int | None
    label_text: str | None
    reason: str
    end: int = -1  # position in the work text just past the matched label


def _read_value(work: str, start: int, book: _LabelBook) -> _Read:
    """Match the longest label at ``start``, skipping wrappers that do not begin one."""
    stop = min(len(work), start + book.window)
    line_end = _LINE_END.search(work, start, stop)
    raw = work[start : line_end.start() if line_end else stop]
    norm, origin = _normalise_with_origin(raw)
    position = 0
    while position < len(norm):
        for key, index in book.by_length:
            if norm.startswith(key, position) and _ends_word(norm, position + len(key), key):
                first = origin[position]
                last = origin[position + len(key) - 1] + 1
                return _Read(index, raw[first:last], "ok", start + last)
        if norm[position] not in _OPENERS:
            break
        position += 1
    if position >= len(norm):
        return _Read(None, None, "nothing after ACTION=")
    placeholder = _fold(PLACEHOLDER)
    if norm.startswith(placeholder, position) and _ends_word(
        norm, position + len(placeholder), placeholder
    ):
        return _Read(None, PLACEHOLDER, f"placeholder {PLACEHOLDER!r} instead of an action")
    shown = _unknown_value(raw[origin[position] :], opened=norm[:position])
    return _Read(None, shown, f"unknown label {shown!r}")


def _fold(text: str) -> str:
    """Straight quotes and casefold: the per-character part of normalisation."""
    return text.translate(_QUOTE_FOLD).casefold()


def _normalise_with_origin(raw: str) -> tuple[str, list[int]]:
    """``normalise_label``-style text (without stripping) and, per character, its raw index.

    The origin map lets the label be reported as written while matching on the
    normalised form (casefolding can lengthen text: "ß" -> "ss").
    """
    chars: list[str] = []
    origin: list[int] = []
    previous_space = False
    for at, char in enumerate(raw):
        if char.isspace():
            if not previous_space:
                chars.append(" ")
                origin.append(at)
            previous_space = True
            continue
        previous_space = False
        for folded in _fold(char):
            chars.append(folded)
            origin.append(at)
    return "".join(chars), origin


def _ends_word(norm: str, end: int, key: str) -> bool:
    """Whether a label ending at ``end`` is not glued to more of a word ("13" is not "1")."""
    if end >= len(norm) or not _is_word(key[-1]):
        return True
    following = norm[end]
    if _is_word(following):
        return False
    after = norm[end + 1 : end + 2]
    if following in _JOINERS and after and _is_word(after):
        return False
    return not (following in _DECIMAL_MARKS and after.isdigit())


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _unknown_value(rest: str, opened: str) -> str:
    """A short quote of an unrecognised value for the reason: up to its closer or clause end."""
    cut = len(rest)
    for opener in set(opened):
        closer = _CLOSER_OF.get(opener)
        if closer is not None:
            found = rest.translate(_QUOTE_FOLD).find(closer)
            if found != -1:
                cut = min(cut, found)
    clause = re.search(r"[.,;:!?](?:\s|$)", rest)
    if clause is not None:
        cut = min(cut, clause.start())
    shown = rest[:cut].strip() or rest.strip()
    if len(shown) > _UNKNOWN_SHOWN:
        shown = shown[: _UNKNOWN_SHOWN - 3].rstrip() + "..."
    return shown
