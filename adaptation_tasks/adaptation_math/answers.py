r"""Find the final numeric answer in a model's math output and compare it with the two gold answers.

Order of evidence: the last `\boxed{...}`, then the last "the answer is ...", then the last number.
Numbers may carry thousands commas, a sign, a decimal part, or be fractions (`3/4`, `\frac{3}{4}`).
"""
from __future__ import annotations

import re
from fractions import Fraction

RELATIVE_TOLERANCE = Fraction(1, 10**6)

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_OR_FRACTION = re.compile(rf"({_NUMBER})(?:\s*/\s*({_NUMBER}))?")
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?", re.IGNORECASE)


def parse_number(text: str) -> Fraction | None:
    """The first number (or fraction) in `text`."""
    match = _NUMBER_OR_FRACTION.search(_LATEX_FRACTION.sub(r"\1/\2", text))
    if match is None:
        return None
    numerator = Fraction(match.group(1).replace(",", ""))
    if match.group(2) is None:
        return numerator
    denominator = Fraction(match.group(2).replace(",", ""))
    return numerator / denominator if denominator else None


def extract_math_answer(text: str) -> str | None:
    """The text of the final answer (still unparsed), or None when the output has no number."""
    boxed = _last_boxed(text)
    if boxed is not None and parse_number(boxed) is not None:
        return boxed.strip()
    after_answer_is = [m.end() for m in _ANSWER_IS.finditer(text)]
    if after_answer_is:
        match = _NUMBER_OR_FRACTION.search(_LATEX_FRACTION.sub(r"\1/\2", text[after_answer_is[-1] :]))
        if match:
            return match.group(0)
    numbers = list(_NUMBER_OR_FRACTION.finditer(_LATEX_FRACTION.sub(r"\1/\2", text)))
    return numbers[-1].group(0) if numbers else None


def same_number(value: Fraction, gold: Fraction) -> bool:
    return abs(value - gold) <= RELATIVE_TOLERANCE * max(1, abs(gold))


def match_math_answer(text: str, doc: dict) -> dict:
    """{"answer", "new", "old"}: the extracted answer and whether it equals the alternative / original gold."""
    answer = extract_math_answer(text)
    value = parse_number(answer) if answer is not None else None
    return {
        "answer": answer,
        "new": value is not None and same_number(value, Fraction(doc["alternative_answer"])),
        "old": value is not None and same_number(value, Fraction(doc["original_answer"])),
    }


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    opening = text.find("{", start)
    if opening < 0:
        return None
    depth = 0
    for position in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[opening + 1 : position]
    return None  # unclosed: generation stopped inside the box
