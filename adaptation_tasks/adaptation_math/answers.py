r"""Find the final numeric answer in a model's math output and compare it with the two gold answers.

Order of evidence: the last `\boxed{...}`, then the last "the answer is ..." sentence, then the last number.
In a box or an answer sentence that is an equation chain (`8 \times 5 = 40`) the part after the last `=`
counts, and a bare arithmetic expression (`8 \times 5`) is evaluated. Numbers may carry thousands
separators (`1,500`, LaTeX `1{,}500` and `1\,500`), a sign, a decimal part, or be fractions (`3/4`, `\frac{3}{4}`).
"""
from __future__ import annotations

import re
from fractions import Fraction

from kvinject.adaptation_tasks.adaptation_math.expression import Const, ExpressionError, evaluate, parse_infix

RELATIVE_TOLERANCE = Fraction(1, 10**6)

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_OR_FRACTION = re.compile(rf"({_NUMBER})(?:\s*/\s*({_NUMBER}))?")
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|\\,|\\ |~)(?=\d{3}(?!\d))")
_LATEX_OPERATORS = ((r"\times", "*"), (r"\cdot", "*"), (r"\div", "/"), ("×", "*"), ("÷", "/"))
_ARITHMETIC = re.compile(r"[\d.\s()+\-*/]+")


def _plain(text: str) -> str:
    """LaTeX spellings of separators and operators in their plain form."""
    text = _LATEX_THOUSANDS.sub(",", text)
    for latex, plain in _LATEX_OPERATORS:
        text = text.replace(latex, plain)
    return _LATEX_FRACTION.sub(r"\1/\2", text)


def parse_number(text: str) -> Fraction | None:
    """The value of `text` when it is plain arithmetic (`8 * 5`, `540.`), else its first number (or fraction)."""
    text = _plain(text)
    value = _arithmetic_value(text)
    if value is not None:
        return value
    match = _NUMBER_OR_FRACTION.search(text)
    if match is None:
        return None
    numerator = Fraction(match.group(1).replace(",", ""))
    if match.group(2) is None:
        return numerator
    denominator = Fraction(match.group(2).replace(",", ""))
    return numerator / denominator if denominator else None


def _arithmetic_value(text: str) -> Fraction | None:
    candidate = text.strip().strip("$").strip().rstrip(".").replace(",", "")
    if not candidate or not _ARITHMETIC.fullmatch(candidate) or not re.search(r"\d", candidate):
        return None
    try:
        return evaluate(parse_infix(candidate, Const), {})
    except ExpressionError:
        return None


def _result_of_chain(span: str) -> str:
    """`8 * 5 = 40` -> `40`: the last side of an equation chain is the result."""
    return span.rsplit("=", 1)[-1]


def extract_math_answer(text: str) -> str | None:
    """The text of the final answer (still unparsed), or None when the output has no number."""
    text = _plain(text)
    boxed = _last_boxed(text)
    if boxed is not None and parse_number(_result_of_chain(boxed)) is not None:
        return _result_of_chain(boxed).strip()
    after_answer_is = [m.end() for m in _ANSWER_IS.finditer(text)]
    if after_answer_is:
        rest = text[after_answer_is[-1] :]
        end = _SENTENCE_END.search(rest)
        sentence = _result_of_chain(rest[: end.start()] if end else rest)
        match = _NUMBER_OR_FRACTION.search(sentence)
        if match:
            return sentence.strip() if _arithmetic_value(sentence) is not None else match.group(0)
    numbers = list(_NUMBER_OR_FRACTION.finditer(text))
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
