"""What an answer states, shared by every matcher (math, semantic, your own pairs): negated and corrected
alternatives taken out, and numbers read however they are written.

Negations and corrections state only the value they end on: "not 40 but 45", "45 (not 40)", "45, not 40",
"45 rather than 40", "45 instead of 40", "instead of 40, 45", "40 — no, 45", "40... no wait, 45", and a
remark about the other subject in brackets ("Ulaanbaatar (Kyiv is Ukraine's capital)") all state 45 /
Ulaanbaatar only.

Numbers: digits with a sign (also the Unicode minus "−5"), thousands separated by commas or by a space,
no-break or thin space ("1,500", "1 500"), a decimal point, a decimal comma where it cannot be a thousands
separator ("2,5", "1.234,5"; "1,500" stays fifteen hundred), fractions "3/4", and numbers spelled out up
to the thousands ("twelve", "forty-five", "one hundred and five", "a thousand"). A lone "one" is a number
only where the caller says so: in prose it is mostly a pronoun ("one of the ...").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# --- negations and corrections -------------------------------------------------------------------------

# A bracketed remark that negates or talks about something else: "(not 40)", "(Kyiv is Ukraine's capital)";
# a bracket that only names the answer again ("(W)", "(uranium)", "(XCD)", "(3 + 4)") stays.
_NEGATING_BRACKET = re.compile(
    r"\s*\((?=\s*(?:not|no|rather|instead)\b|[^()]*\b(?:is|was|are|were|has|had)\b)[^()]*\)", re.IGNORECASE
)
# "X — no, Y", "X, no wait, Y", "X... actually, Y": the part after the correction is stated.
_CORRECTION = re.compile(
    r"(?:\s*(?:—|–|--|\.\.\.|…|[,;:])\s*|\s+-\s+)(?:no\s*[,!:]\s*(?:wait\b[,!:]?)?|no\s+wait\b[,!:]?|wait\b[,!:]?"
    r"|sorry\b[,!:]?|actually\b[,!:]?)\s*",
    re.IGNORECASE,
)
# "not X but Y": Y is stated
_NOT_BUT = re.compile(r"^(?:.*?\s)?not\s+.*?,?\s*\bbut(?:\s+rather)?\s+", re.IGNORECASE)
# "instead of X, Y" / "rather than X, Y" at the start
_LEADING_NEGATION = re.compile(r"^\s*(?:rather than|instead of)\s+(?:[^,;]|,(?=\d))*[,;]\s*", re.IGNORECASE)
# "Y, not X" / "Y rather than X" / "Y instead of X" / "Y and not X": the negated clause up to its end (a
# comma or point inside a number such as "1,000" does not end it)
NEGATED_CLAUSE = re.compile(
    r",?\s+(?:and\s+|but\s+)?(?:not|rather than|instead of|as opposed to)\s+(?:[^,.;\n]|[,.](?=\d))*", re.IGNORECASE
)


def stated_part(span: str) -> str:
    """The part of an answer span (the words after "the answer is", a box) that states the answer."""
    span = _NEGATING_BRACKET.sub("", span)
    # the last part that says something ("Paris, actually." keeps Paris)
    span = next((part for part in reversed(_CORRECTION.split(span)) if part.strip(" .!?")), "")
    span = _NOT_BUT.sub("", span, count=1)
    span = _LEADING_NEGATION.sub("", span, count=1)
    return NEGATED_CLAUSE.split(span)[0].strip()


def without_negations(text: str) -> str:
    """A whole output with the negated material taken out, everything else kept in place (for matchers that
    read the last mention of an answer): brackets that negate, "not X but", "instead of X,", ", not X"."""
    text = _NEGATING_BRACKET.sub("", text)
    text = re.sub(r"\bnot\s+[^;\n]*?,?\s*\bbut(?:\s+rather)?\s+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"(?:^|(?<=[.!?\n]\s))\s*(?:rather than|instead of)\s+(?:[^,;.\n]|[,.](?=\d))*[,;]\s*", "", text,
                  flags=re.IGNORECASE)
    return NEGATED_CLAUSE.sub("", text)


# --- numbers ---------------------------------------------------------------------------------------------

_MINUS = "-\u2212"  # hyphen-minus and the Unicode minus sign
_SPACES = " \u00a0\u2009\u202f"  # space, no-break space, thin space, narrow no-break space
_DIGITS = (
    rf"\d{{1,3}}(?:\.\d{{3}})+,\d+"  # 1.234,5: dot thousands, decimal comma
    rf"|\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?"  # 1,500 / 1,500.25
    rf"|\d{{1,3}}(?:[{_SPACES}]\d{{3}})+(?![\d.,]\d)"  # 1 000 (a group of exactly three digits)
    rf"|\d+,(?!\d{{3}}(?!\d))\d+"  # 2,5 / 3,75: a comma that cannot be a thousands separator
    rf"|\d+(?:\.\d+)?|\.\d+"
)
# A sign only where it cannot be a hyphen or a subtraction ("3-1", "x-5").
_DIGIT_NUMBER = re.compile(rf"(?<![\w.,)])(?:(?<![\w)])[{_MINUS}])?(?:{_DIGITS})(?!\d)")

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000}
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TENS, *_SCALES], key=len, reverse=True))
# A run of number words: "forty-five", "one hundred and five", "a thousand" ("and" only after a scale word).
_WORD_NUMBER = re.compile(
    rf"\b(?:(?:a|one)\s+(?=hundred|thousand))?(?:{_NUMBER_WORD})"
    rf"(?:(?:[\s-]+|(?:(?<=hundred)|(?<=thousand))\s+and\s+)(?:{_NUMBER_WORD}))*\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class NumberMention:
    start: int
    end: int
    value: Fraction
    text: str


def digit_value(text: str) -> Fraction:
    """The value of one match of the digit pattern ("−1 000", "2,5", "1,500.25")."""
    text = text.replace("\u2212", "-")
    for space in _SPACES:
        text = text.replace(space, "")
    if re.fullmatch(r"-?\d{1,3}(?:\.\d{3})+,\d+", text):
        text = text.replace(".", "").replace(",", ".")
    elif "," in text and not re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", ".")  # a decimal comma
    return Fraction(text.replace(",", ""))


def words_value(text: str) -> int | None:
    """"forty-five" -> 45, "one hundred and five" -> 105, "a thousand" -> 1000; None for "five twenty"."""
    words = [word for word in re.split(r"[\s-]+", text.lower()) if word and word != "and"]
    total, current, last = 0, 0, None  # last: the kind of the previous word
    for word in words:
        if word in ("a", "one") and last is None and len(words) > 1 and words[1] in _SCALES:
            current, last = 1, "unit"
        elif word in _SCALES:
            if word == "hundred":
                if current >= 100 or last == "hundred":
                    return None
                current, last = (current or 1) * 100, "hundred"
            else:
                if last == "thousand" or total:
                    return None
                total, current, last = (current or 1) * 1000, 0, "thousand"
        elif word in _TENS:
            if last in ("unit", "tens"):
                return None
            current, last = current + _TENS[word], "tens"
        else:
            value = _UNITS[word]
            if last == "unit" or (last == "tens" and value >= 10):
                return None
            current, last = current + value, "unit"
    return total + current


def find_numbers(text: str, *, lone_one: bool = True) -> list[NumberMention]:
    """Every number of `text` in reading order; a fraction "a/b" is one mention."""
    mentions = [NumberMention(m.start(), m.end(), digit_value(m.group(0)), m.group(0)) for m in _DIGIT_NUMBER.finditer(text)]
    for match in _WORD_NUMBER.finditer(text):
        value = words_value(match.group(0))
        if value is None or (not lone_one and match.group(0).lower() == "one"):
            continue
        mentions.append(NumberMention(match.start(), match.end(), Fraction(value), match.group(0)))
    mentions.sort(key=lambda mention: mention.start)
    return _join_fractions(text, mentions)


def _join_fractions(text: str, mentions: list[NumberMention]) -> list[NumberMention]:
    joined: list[NumberMention] = []
    for mention in mentions:
        previous = joined[-1] if joined else None
        if (previous is not None and mention.value and re.fullmatch(r"\s*/\s*", text[previous.end : mention.start])
                and "/" not in previous.text):
            value = previous.value / mention.value
            joined[-1] = NumberMention(previous.start, mention.end, value, text[previous.start : mention.end])
        else:
            joined.append(mention)
    return joined


def spelled_numbers_as_digits(text: str, *, lone_one: bool = False) -> str:
    """`text` with every spelled-out number written in digits ("twenty-six" -> "26")."""
    def digits(match: re.Match) -> str:
        value = words_value(match.group(0))
        if value is None or (not lone_one and match.group(0).lower() == "one"):
            return match.group(0)
        return str(value)

    return _WORD_NUMBER.sub(digits, text)
