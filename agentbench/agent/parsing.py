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

Cost is bounded, whatever the model wrote. The text is NFKC-normalised only in
regions, from the end backwards, and only near characters that can become a
separator (":" or "="); the search stops at the first region holding a keyword
(see :func:`_find_last_keyword`). Regions start and end where NFKC is known to
act independently on each side (before a character that neither is nor
decomposes to a combining mark or a character that composes backwards), so a
region normalises exactly as it would inside the whole text. One deliberate
difference from normalising everything at once: after 30 combining characters
in a row, each further one is normalised on its own (the cut of Unicode's
stream-safe text format, UAX #15 section 13); real text never has such runs,
and normalising them whole takes time quadratic in their length.
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

# What may stand between the keyword and its separator, and the separators.
_KEYWORD_GAP = r"[ \t*_`]*"
_SEPARATORS = ":="
# Keyword and separator only; the value is read by code, not by the regex, so that
# several occurrences on one line are all found and nothing backtracks.
ACTION_PATTERN = re.compile(
    rf"(?<![^\W_]){ACTION_KEYWORD.lower()}{_KEYWORD_GAP}[{_SEPARATORS}]", re.IGNORECASE
)

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
    work = _normalised_around_last_keyword(text, book)
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


# Raw characters normalised per region when the search moves back; any size works, this
# one keeps the per-region overhead small against the normalisation itself.
_REGION = 4096
# Combining characters in a row after which each further one is normalised on its own
# (UAX #15 section 13: stream-safe text has at most 30 non-starters in a row).
_MAX_COMBINING_RUN = 30
_SEPARATOR = re.compile(f"[{_SEPARATORS}]")
# ACTION_PATTERN without its look-behind: it finds a superset of its matches, quickly.
_KEYWORD_ANYWHERE = re.compile(ACTION_PATTERN.pattern.removeprefix(r"(?<![^\W_])"), re.I)
# A text before a separator that may be the end of a keyword begun further back: a suffix
# of the keyword ("", "n", "on", ..., "action") followed by the gap.
_KEYWORD_TAIL = re.compile(
    "".join("(?:" for _ in ACTION_KEYWORD)
    + "".join(f"{char})?" for char in ACTION_KEYWORD.lower())
    + _KEYWORD_GAP,
    re.IGNORECASE,
)


# Code points with a decomposition or a non-zero combining class all lie below this
# (checked in tests/test_parsing.py for the running Python's Unicode version).
_UNICODE_DATA_END = 0x30000


@dataclass(frozen=True)
class _UnicodeClasses:
    """Regexes for where NFKC may be cut and for what can become a separator."""

    unstable: re.Pattern[str]  # a char NFKC may join or reorder with what precedes it
    capped_run: re.Pattern[str]  # _MAX_COMBINING_RUN unstable chars
    # More unstable chars in a row than that, or (a superset, quick to scan for: regexes
    # test a class of many characters outside the BMP one range at a time) of such chars
    # and any character outside the BMP.
    long_run: re.Pattern[str]
    maybe_long_run: re.Pattern[str]
    separator_source: re.Pattern[str]  # a char whose NFKD holds ":" or "="
    # In the reversed text, what may become the end of a keyword (its "n", gap and separator).
    keyword_end_backwards: re.Pattern[str]


@lru_cache(maxsize=1)
def _unicode_classes() -> _UnicodeClasses:
    """Derive the classes from ``unicodedata`` once (tens of milliseconds, on first use)."""
    chars = [chr(code) for code in range(_UNICODE_DATA_END)]
    combining = {char for char in chars if unicodedata.combining(char)}
    decomposable = {char: unicodedata.normalize("NFKD", char) for char in chars
                    if unicodedata.decomposition(char)}  # fmt: skip
    # Characters that compose with the starter before them: the second of a canonical pair
    # ("e" + U+0301), and Hangul vowel and trailing consonant jamo (composed by rule).
    composes_backwards = {chr(code) for code in [*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)]}
    for char in decomposable:
        parts = unicodedata.decomposition(char).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            composes_backwards.add(chr(int(parts[1], 16)))
    unstable = combining | composes_backwards
    unstable |= {char for char, nfkd in decomposable.items() if nfkd[0] in unstable}
    sources = {char for char, nfkd in decomposable.items() if set(nfkd) & set(_SEPARATORS)}
    sources |= set(_SEPARATORS)
    # A keyword's last letter, gap and separator come from consecutive raw characters: one
    # whose NFKD holds an "n", then ones that become gap only, then a separator source
    # (or, were there such a character, one holding both "n" and a separator).
    last_letter = ACTION_KEYWORD[-1]
    ends = {char for char, nfkd in decomposable.items() if last_letter in nfkd.upper()}
    ends |= {last_letter, last_letter.lower()}
    gap = set(re.sub(r"[^ \t*_`]", "", " \t*_`"))
    gaps = {char for char, nfkd in decomposable.items() if set(nfkd) <= gap} | gap
    ends_and_sources = _char_class(ends & sources) if ends & sources else None
    keyword_end = f"{_char_class(sources)}{_char_class(gaps)}*{_char_class(ends)}"
    if ends_and_sources:
        keyword_end += f"|{ends_and_sources}"
    unstable_or_astral = _char_class({char for char in unstable if char <= "\uffff"})
    unstable_or_astral = unstable_or_astral[:-1] + "\U00010000-\U0010ffff]"
    unstable_class = _char_class(unstable)
    more_than_cap = f"{{{_MAX_COMBINING_RUN + 1},}}"
    return _UnicodeClasses(
        unstable=re.compile(unstable_class),
        capped_run=re.compile(f"{unstable_class}{{{_MAX_COMBINING_RUN}}}"),
        long_run=re.compile(unstable_class + more_than_cap),
        maybe_long_run=re.compile(unstable_or_astral + more_than_cap),
        separator_source=re.compile(_char_class(sources)),
        keyword_end_backwards=re.compile(keyword_end),
    )


def _char_class(chars: set[str]) -> str:
    """A regex for one of ``chars``, quick to test.

    Consecutive code points become ranges; and as a regex tests a class of characters
    outside the BMP range by range, those are tested only for such a character.
    """
    ranges: list[list[int]] = []
    for code in sorted(map(ord, chars)):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])

    def listed(part: list[list[int]]) -> str:
        return "".join(re.escape(chr(low)) + ("-" + re.escape(chr(high)) if high > low else "")
                       for low, high in part)  # fmt: skip

    bmp = [pair for pair in ranges if pair[1] <= 0xFFFF]
    astral = [pair for pair in ranges if pair[1] > 0xFFFF]
    if not astral:
        return f"[{listed(bmp)}]"
    return f"(?:[{listed(bmp)}]|(?=[\U00010000-\U0010ffff])[{listed(astral)}])"


def _is_cut(text: str, at: int) -> bool:
    """Whether NFKC acts on ``text[:at]`` and ``text[at:]`` independently."""
    if at <= 0 or at >= len(text):
        return True
    classes = _unicode_classes()
    if not classes.unstable.match(text, at):
        return True
    run_start = at - _MAX_COMBINING_RUN
    return run_start >= 0 and classes.capped_run.match(text, run_start) is not None


def _cut_at_or_before(text: str, at: int) -> int:
    at = max(at, 0)
    while not _is_cut(text, at):  # at most _MAX_COMBINING_RUN steps
        at -= 1
    return at


def _cut_after(text: str, at: int) -> int:
    at += 1
    while not _is_cut(text, at):
        at += 1
    return at


def _nfkc(text: str, start: int, stop: int) -> str:
    """NFKC of ``text[start:stop]`` (both cuts), each char past a long combining run alone."""
    look_from = max(0, start - _MAX_COMBINING_RUN)
    if text[look_from:stop].isascii():
        return text[start:stop]
    classes = _unicode_classes()
    parts: list[str] = []
    done = start
    for maybe in classes.maybe_long_run.finditer(text, look_from, stop):
        for run in classes.long_run.finditer(text, maybe.start(), maybe.end()):
            alone = max(run.start() + _MAX_COMBINING_RUN, start)
            parts.append(unicodedata.normalize("NFKC", text[done:alone]))
            parts.extend(unicodedata.normalize("NFKC", char) for char in text[alone : run.end()])
            done = run.end()
    parts.append(unicodedata.normalize("NFKC", text[done:stop]))
    return "".join(parts)


def _normalised_around_last_keyword(text: str, book: _LabelBook) -> str:
    """The NFKC text from before the last keyword to past what :func:`_read_value` reads.

    Empty when there is no keyword. The result is a slice of the whole text's NFKC
    (as described in the module docstring), holding the last keyword at an index
    above 0 (so its look-behind saw the true preceding character), every keyword
    that :func:`_last_keyword` would keep as ``earlier``, and ``book.window``
    characters after the last keyword, or up to the end of the text.
    """
    found = _find_last_keyword(text)
    if found is None:
        return ""
    start, stop, work, last = found
    if book.has_keyword:
        # Keywords ending within a window before the last one must be certain, too.
        while start > 0 and _uncertain_first_keyword(work, last.start() - book.window):
            start = _cut_at_or_before(text, stop - 2 * (stop - start))
            work = _nfkc(text, start, stop)
            last = _last_match(work)
    while stop < len(text) and len(work) - last.end() < book.window:
        more = _cut_at_or_before(text, stop + book.window)
        more = more if more > stop else _cut_after(text, stop)
        work += _nfkc(text, stop, more)
        stop = more
    return work


def _find_last_keyword(text: str) -> tuple[int, int, str, re.Match[str]] | None:
    """The last keyword: (start, stop) of a region of ``text``, its NFKC, the match in it.

    Works backwards over regions cut where NFKC acts independently, each ending just
    after what may be the end of a keyword. A keyword found in a region is certain
    unless it begins the region (the character before it is unseen); and only the
    region's first separator can end a keyword that begins before the region. So the
    last certain keyword of the region is the answer; failing that, when the first
    separator may end a keyword, the region widens backwards (keeping its text up to
    that separator); else the search moves on before the region.
    """
    classes = _unicode_classes()
    backwards = text[::-1]
    stop = start = len(text)
    work = ""
    while True:
        if start == stop:
            end = classes.keyword_end_backwards.search(backwards, len(text) - stop)
            if end is None:
                return None
            stop = _cut_after(text, len(text) - 1 - end.start())
            # From before the raw "n" of that end, however long its gap.
            start = _cut_at_or_before(text, min(stop - _REGION, len(text) - end.end() - 8))
            work = _nfkc(text, start, stop)
        last = _last_match(work)
        if last is not None and (last.start() > 0 or start == 0):
            return start, stop, work, last
        if start == 0 or not _uncertain_first_keyword(work, 0):
            stop = start
            continue
        kept, stop = _through_first_separator(text, start, stop)
        wider = _cut_at_or_before(text, stop - max(_REGION, 2 * (stop - start)))
        work = _nfkc(text, wider, start) + kept
        start = wider


def _through_first_separator(text: str, start: int, stop: int) -> tuple[str, int]:
    """The NFKC of ``text[start:cut]`` and ``cut``: the first cut past its first separator."""
    parts: list[str] = []
    done = start
    for source in _unicode_classes().separator_source.finditer(text, start, stop):
        cut = _cut_after(text, source.start())
        if cut > done:
            parts.append(_nfkc(text, done, cut))
            done = cut
            if _SEPARATOR.search(parts[-1]):
                break
    return "".join(parts), done


def _last_match(work: str) -> re.Match[str] | None:
    if not _KEYWORD_ANYWHERE.search(work):  # several times quicker than ACTION_PATTERN
        return None
    last = None
    for last in ACTION_PATTERN.finditer(work):  # noqa: B007 - only the last one is wanted
        pass
    return last


def _uncertain_first_keyword(work: str, relevant_from: int) -> bool:
    """Whether a keyword may end at ``work``'s first separator and begin before ``work``.

    Only a keyword ending at or after ``relevant_from`` counts.
    """
    separator = _SEPARATOR.search(work)
    if separator is None or separator.end() < relevant_from:
        return False
    return _KEYWORD_TAIL.fullmatch(work, 0, separator.start()) is not None


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
