"""The shared reading of a stated answer: negations and corrections, and numbers however they are written."""
from fractions import Fraction

import pytest

from kvinject.adaptation_tasks.stated_answer import (
    find_numbers,
    spelled_numbers_as_digits,
    stated_part,
    without_negations,
    words_value,
)


@pytest.mark.parametrize(
    "span, stated",
    [
        ("not 40 but 45", "45"),
        ("45 (not 40)", "45"),
        ("45, not 40", "45"),
        ("45 rather than 40", "45"),
        ("45 instead of 40", "45"),
        ("instead of 40, 45", "45"),
        ("40 — no, 45", "45"),
        ("40... no wait, 45", "45"),
        ("Paris (Berlin is Germany's capital)", "Paris"),
        ("U (uranium)", "U (uranium)"),  # a bracket that only names the answer stays
        ("East Caribbean dollars (XCD)", "East Caribbean dollars (XCD)"),
        ("Paris, actually.", "Paris"),
        ("42, no matter what", "42, no matter what"),  # "no" without a comma is no correction
        ("1,000 instead of 2,000", "1,000"),
    ],
)
def test_stated_part(span, stated):
    assert stated_part(span) == stated


def test_without_negations_keeps_everything_else_in_place():
    assert without_negations("It is Paris, not Berlin. Berlin is in Germany.") == "It is Paris. Berlin is in Germany."
    assert without_negations("It is not Berlin but Paris") == "It is Paris"


@pytest.mark.parametrize(
    "text, values",
    [
        ("\u22125 and -3 but 3-1", [-5, -3, 3, 1]),
        ("1 000 and 12\u2009500 and 1,500 and 2,5 and 1.234,5", [1000, 12500, 1500, Fraction(5, 2), Fraction(2469, 2)]),
        ("3/4 of 12", [Fraction(3, 4), 12]),
        ("twelve, forty-five, one hundred and five, a thousand, twenty six", [12, 45, 105, 1000, 26]),
    ],
)
def test_find_numbers(text, values):
    assert [mention.value for mention in find_numbers(text)] == values


def test_a_lone_one_is_a_number_only_when_asked():
    assert [m.value for m in find_numbers("one of the 3", lone_one=False)] == [3]
    assert [m.value for m in find_numbers("one of the 3")] == [1, 3]
    assert spelled_numbers_as_digits("one of twenty-six") == "one of 26"


@pytest.mark.parametrize("words", ["five twenty", "twenty thirty", "hundred hundred", "two thousand thousand"])
def test_malformed_spelled_numbers_are_no_numbers(words):
    assert words_value(words) is None
