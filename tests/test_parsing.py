"""Action extraction: tricky LLM answers against each label set of the project."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agentbench.agent.parsing import (
    ACTION_PATTERN,
    PLACEHOLDER,
    ParsedAction,
    format_action,
    normalise_label,
    parse_action,
)
from agentbench.envs.bandits import COLOUR_LABELS
from agentbench.envs.tictactoe import CELL_LABELS
from agentbench.errors import ConfigError

COLOURS = list(COLOUR_LABELS)
NUMBERS = [str(i) for i in range(20)]
CELLS = list(CELL_LABELS)
# Prefix traps: "blue" is a prefix of "blue green", "light blue" ends in "blue".
SHADES = ["blue", "light blue", "dark blue", "blue green", "green"]
MOVIES = [
    "Velvet Empire",
    "Velvet",  # a prefix of the one above
    "Velvet Empire #2",  # a repeated title, as the contextual env numbers them
    "Toy Story (1995)",
    "Se7en (1995)",
    "Se7en",
    "Amélie (2001)",
    "(500) Days of Summer (2009)",  # starts with a bracket
    "Schindler's List (1993)",
    "Star Wars: Episode IV - A New Hope (1977)",
    "Lights, Camera, Action: Encore",  # contains the keyword itself
    "Encore",
    "Léon: The Professional (1994)",
]
LABEL_SETS = {
    "colours": COLOURS,
    "numbers": NUMBERS,
    "cells": CELLS,
    "shades": SHADES,
    "movies": MOVIES,
}

# (answer, label set, expected label or None, expected start of the reason)
CASES = [
    # case, spaces and separators
    ("ACTION=blue", "colours", "blue", "ok"),
    ("action=Blue", "colours", "blue", "ok"),
    ("Action = BLUE", "colours", "blue", "ok"),
    ("ACTION\t=\tgreen", "colours", "green", "ok"),
    ("ACTION:green", "colours", "green", "ok"),
    ("Final Action: green", "colours", "green", "ok"),
    # quotes, brackets, markdown
    ('ACTION="red"', "colours", "red", "ok"),
    ("ACTION='red'", "colours", "red", "ok"),
    ("ACTION=\u201cyellow\u201d", "colours", "yellow", "ok"),
    ("ACTION=\u2018yellow\u2019", "colours", "yellow", "ok"),
    ("ACTION=`orange`", "colours", "orange", "ok"),
    ("ACTION=[purple]", "colours", "purple", "ok"),
    ("ACTION={red}", "colours", "red", "ok"),
    ("ACTION=<red>", "colours", "red", "ok"),
    ("ACTION = [ pink ]", "colours", "pink", "ok"),
    ("**ACTION=blue**", "colours", "blue", "ok"),
    ("ACTION=**blue**", "colours", "blue", "ok"),
    ("`ACTION=blue`", "colours", "blue", "ok"),
    ("**Action:** *green*", "colours", "green", "ok"),
    ("__ACTION__=green", "colours", "green", "ok"),
    ("ACTION=[`'**gray**'`]", "colours", "gray", "ok"),
    # trailing punctuation and explanations
    ("ACTION=blue.", "colours", "blue", "ok"),
    ("ACTION=blue,", "colours", "blue", "ok"),
    ("ACTION=blue!", "colours", "blue", "ok"),
    ("ACTION=blue because it has the best mean so far.", "colours", "blue", "ok"),
    ("ACTION=red or maybe blue", "colours", "red", "ok"),
    # numbers
    ("ACTION=(3)", "numbers", "3", "ok"),
    ("ACTION=3.", "numbers", "3", "ok"),
    ('ACTION="3"', "numbers", "3", "ok"),
    ("ACTION=3", "numbers", "3", "ok"),  # not 13
    ("ACTION=13", "numbers", "13", "ok"),  # not 1
    ("ACTION=1", "numbers", "1", "ok"),  # not 10..19
    ("ACTION=19.", "numbers", "19", "ok"),
    ("ACTION=4", "cells", "4", "ok"),
    ("ACTION=10", "cells", None, "unknown label '10'"),  # no 10th cell, and not "1"
    ("ACTION=3.5", "numbers", None, "unknown label '3.5'"),
    ("ACTION=03", "numbers", None, "unknown label '03'"),
    ("ACTION=three", "numbers", None, "unknown label 'three'"),
    # the last ACTION wins
    ("I will answer in the form ACTION=X.\nBlue looks best.\nACTION=green", "colours", "green",
     "ok"),
    ("ACTION=red\nOn reflection, green is better. ACTION=green", "colours", "green", "ok"),
    ("ACTION=red ACTION=blue", "colours", "blue", "ok"),
    ("ACTION=ACTION=blue", "colours", "blue", "ok"),
    ("ACTION=green\nRemember, the format is ACTION=X", "colours", None, "placeholder 'X'"),
    ("ACTION=green\nACTION=violet", "colours", None, "unknown label 'violet'"),
    # placeholder, unknown labels, no answer
    ("ACTION=X", "colours", None, "placeholder 'X'"),
    ("ACTION=<X>", "numbers", None, "placeholder 'X'"),
    ("ACTION=x where x is one of the colours", "colours", None, "placeholder 'X'"),
    ("ACTION=blu", "colours", None, "unknown label 'blu'"),
    ("ACTION=bluegreen", "colours", None, "unknown label 'bluegreen'"),
    ("ACTION=blue-green", "colours", None, "unknown label 'blue-green'"),
    ("ACTION=purple", "shades", None, "unknown label 'purple'"),
    ("ACTION=**violet**, it is new", "colours", None, "unknown label 'violet'"),
    ("ACTION=light blue", "colours", None, "unknown label 'light blue'"),
    ("I press the blue button.", "colours", None, "no ACTION= found"),
    ("", "colours", None, "no ACTION= found"),
    ("REACTION=blue", "colours", None, "no ACTION= found"),
    ("ACTIONS: blue", "colours", None, "no ACTION= found"),
    ("ACTION=", "colours", None, "nothing after ACTION="),  # a truncated answer
    ("ACTION=\nblue", "colours", None, "nothing after ACTION="),  # no newline after =
    ("ACTION = **  \n blue", "colours", None, "nothing after ACTION="),
    # labels with spaces: the longest label the value starts with
    ("ACTION=light blue", "shades", "light blue", "ok"),
    ("ACTION=Light   Blue.", "shades", "light blue", "ok"),
    ("ACTION=blue", "shades", "blue", "ok"),
    ("ACTION=blue green", "shades", "blue green", "ok"),
    ("ACTION=blue, green is worse", "shades", "blue", "ok"),
    ("ACTION=dark blue (the darker one)", "shades", "dark blue", "ok"),
    # movie titles
    ("ACTION=Velvet Empire", "movies", "Velvet Empire", "ok"),
    ("ACTION=Velvet", "movies", "Velvet", "ok"),
    ("ACTION=velvet empire #2", "movies", "Velvet Empire #2", "ok"),
    ("ACTION=**Velvet Empire**.", "movies", "Velvet Empire", "ok"),
    ("ACTION=Toy Story (1995).", "movies", "Toy Story (1995)", "ok"),
    ("ACTION=[Toy Story (1995)]", "movies", "Toy Story (1995)", "ok"),
    ("ACTION=Toy Story", "movies", None, "unknown label 'Toy Story'"),
    ("ACTION=(500) Days of Summer (2009)", "movies", "(500) Days of Summer (2009)", "ok"),
    ('ACTION="(500) Days of Summer (2009)"', "movies", "(500) Days of Summer (2009)", "ok"),
    ("ACTION=Se7en", "movies", "Se7en", "ok"),
    ("ACTION=se7en (1995)", "movies", "Se7en (1995)", "ok"),
    ("ACTION=Amélie (2001)", "movies", "Amélie (2001)", "ok"),
    ("ACTION=Ame\u0301lie (2001)", "movies", "Amélie (2001)", "ok"),  # decomposed accent
    ("ACTION=Amelie (2001)", "movies", None, "unknown label 'Amelie (2001)'"),
    ("ACTION=Schindler\u2019s List (1993)", "movies", "Schindler's List (1993)", "ok"),
    ("ACTION=Star Wars: Episode IV - A New Hope (1977)", "movies",
     "Star Wars: Episode IV - A New Hope (1977)", "ok"),
    ("ACTION=Léon: The Professional (1994)!", "movies", "Léon: The Professional (1994)", "ok"),
    ("ACTION=Lights, Camera, Action: Encore", "movies", "Lights, Camera, Action: Encore", "ok"),
    ("ACTION=Encore", "movies", "Encore", "ok"),
    ("ACTION=Velvet\nACTION=Lights, Camera, Action: Encore.", "movies",
     "Lights, Camera, Action: Encore", "ok"),
    # unicode
    ("\uff21\uff23\uff34\uff29\uff2f\uff2e\uff1d\uff42\uff4c\uff55\uff45", "colours", "blue", "ok"),
    ("ACTION\uff1a\uff27\uff32\uff25\uff25\uff2e", "colours", "green", "ok"),
    ("ACTION=\u00a0blue", "colours", "blue", "ok"),  # no-break space
    ("Ich wähle ACTION=\u300cred\u300d", "colours", None, "unknown label"),  # CJK quotes: unknown
    ("思考: 青が良い。ACTION=blue", "colours", "blue", "ok"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "label_set", "expected", "reason"), CASES)
def test_parse_action_table(text: str, label_set: str, expected: str | None, reason: str) -> None:
    labels = LABEL_SETS[label_set]
    parsed = parse_action(text, labels)
    expected_index = None if expected is None else labels.index(expected)
    assert parsed.index == expected_index, parsed
    assert parsed.reason.startswith(reason), parsed
    assert parsed.valid == (expected is not None)


def test_label_text_is_the_value_as_written() -> None:
    parsed = parse_action("ACTION=  **Light   Blue**, surely", SHADES)
    assert parsed == ParsedAction(SHADES.index("light blue"), "Light   Blue", "ok")


def test_unknown_value_is_quoted_without_wrappers_or_explanation() -> None:
    parsed = parse_action("ACTION=[violet] because it is new", COLOURS)
    assert parsed.index is None
    assert parsed.label_text == "violet"


def test_illegal_known_label_keeps_its_index() -> None:
    parsed = parse_action("ACTION=4", CELLS, legal=[0, 1, 2, 8])
    assert parsed.index == 4
    assert parsed.legal is False
    assert parsed.valid is False
    assert parsed.reason == "illegal action '4'"


def test_legal_label_is_valid_and_legal_accepts_numpy() -> None:
    parsed = parse_action("ACTION=8", CELLS, legal=np.array([0, 1, 2, 8]))
    assert parsed.valid and parsed.legal and parsed.index == 8


def test_unknown_label_with_legal_is_not_called_illegal() -> None:
    parsed = parse_action("ACTION=9", CELLS, legal=[0, 1])
    assert parsed.index is None and parsed.legal
    assert parsed.reason.startswith("unknown label")


def test_last_match_wins_even_when_only_legality_differs() -> None:
    parsed = parse_action("ACTION=0 ... no, that cell is taken. ACTION=5", CELLS, legal=[0, 1])
    assert parsed.index == 5 and not parsed.legal


@pytest.mark.parametrize("label_set", sorted(LABEL_SETS))
def test_format_action_round_trip(label_set: str) -> None:
    labels = LABEL_SETS[label_set]
    for index, label in enumerate(labels):
        parsed = parse_action(format_action(label), labels)
        assert parsed == ParsedAction(index, label, "ok"), label


@pytest.mark.parametrize("label_set", sorted(LABEL_SETS))
def test_format_action_round_trip_inside_a_reasoned_answer(label_set: str) -> None:
    labels = LABEL_SETS[label_set]
    for index, label in enumerate(labels):
        text = f"Answer as {format_action(PLACEHOLDER)}.\nThinking...\n{format_action(label)}"
        assert parse_action(text, labels).index == index, label


def test_format_action_is_canonical() -> None:
    assert format_action("blue") == "ACTION=blue"
    assert format_action("Toy Story (1995)") == "ACTION=Toy Story (1995)"
    assert ACTION_PATTERN.fullmatch(format_action(PLACEHOLDER)[: len("ACTION=")])


def test_format_action_rejects_a_label_on_two_lines() -> None:
    with pytest.raises(ConfigError, match="spans lines"):
        format_action("Toy\nStory")


def test_labels_that_normalise_alike_are_rejected() -> None:
    with pytest.raises(ConfigError, match="read the same"):
        parse_action("ACTION=blue", ["Blue", "blue"])
    with pytest.raises(ConfigError, match="read the same"):
        parse_action("ACTION=blue", ["blue", "\uff42\uff4c\uff55\uff45"])


def test_normalise_label() -> None:
    assert normalise_label("  Light \t BLUE ") == "light blue"
    assert normalise_label("Schindler\u2019s List") == "schindler's list"
    assert normalise_label("\uff22\uff4c\uff55\uff45") == "blue"
    assert normalise_label("Ame\u0301lie") == "amélie"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("ACTION=", True),
        ("action :", True),
        ("**Action**:", True),
        ("__ACTION__=", True),
        ("reaction=", False),
        ("transaction:", False),
        ("action_label=", False),
        ("actions=", False),
    ],
)
def test_action_pattern_keyword(text: str, found: bool) -> None:
    assert (ACTION_PATTERN.search(text) is not None) == found


def test_parsed_action_is_frozen() -> None:
    parsed = parse_action("ACTION=blue", COLOURS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.index = 3  # type: ignore[misc]


MEGABYTE = 1_000_000


def test_huge_text_with_answer_at_the_end() -> None:
    filler = "Let me think about which action is best. " * (MEGABYTE // 42)
    text = filler + "I will answer as ACTION=X.\n" + filler + "ACTION=teal"
    assert len(text) > MEGABYTE
    assert parse_action(text, COLOURS).index == COLOURS.index("teal")


def test_huge_text_of_repeated_answers_on_one_line() -> None:
    text = "ACTION=Toy Story (1995) " * (MEGABYTE // 24) + "ACTION=red"
    assert parse_action(text, MOVIES).reason == "unknown label 'red'"  # only the last counts
    assert parse_action(text, [*MOVIES, "red"]).index == len(MOVIES)


def test_huge_line_of_keywords_inside_labels() -> None:
    # Every keyword but the first lies inside a label begun before it: the covering check
    # must stay local, and the answer is the last label begun.
    text = "ACTION=Lights, Camera, " * (MEGABYTE // 23) + "Action: Encore"
    parsed = parse_action(text, MOVIES)
    assert parsed.label_text == "Lights, Camera, Action: Encore"
    assert parsed.index == MOVIES.index("Lights, Camera, Action: Encore")


def test_huge_text_ending_in_the_keyword_only() -> None:
    text = "ACTION=" * (MEGABYTE // 7)
    assert parse_action(text, COLOURS).reason == "nothing after ACTION="


def test_huge_unicode_text_without_an_answer() -> None:
    text = "\uff21\uff23\uff34\uff29\uff2f\uff2e \u9752 " * (MEGABYTE // 10)
    assert parse_action(text, COLOURS).reason == "no ACTION= found"


def test_huge_value_line_is_not_read_to_the_end() -> None:
    text = "ACTION=" + "blue" + " because" * (MEGABYTE // 8)
    assert parse_action(text, COLOURS).index == 0
