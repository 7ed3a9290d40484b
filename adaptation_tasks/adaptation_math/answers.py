r"""Find the final numeric answer in a model's math output and compare it with the two gold answers.

Order of evidence: the last `\boxed{...}`, then the last "the answer is ..." sentence, then the closing
sentences of the text. In a box or an answer sentence, negated and corrected values are left out ("not 40
but 45", "45 (not 40)", "40 — no, 45" state 45: `adaptation_tasks.stated_answer`), an equation chain
(`8 \times 5 = 40`) counts by its result, a bare arithmetic expression (`8 \times 5`) is evaluated, and
otherwise the first number that is left counts. Without either, the answer is the last number of the last
sentence that states a number and does not restate an earlier value ("Originally she had 40."), with
negated values left out there too. Numbers may carry thousands separators (`1,500`, `1 500`, LaTeX
`1{,}500` and `1\,500`), a sign (also the Unicode minus), a decimal point or an unambiguous decimal comma,
be fractions (`3/4`, `\frac{3}{4}`) or be spelled out ("forty-five", also inside `\text{}`).
"""
from __future__ import annotations

import re
from fractions import Fraction

from kvinject.adaptation_tasks.adaptation_math.expression import Const, ExpressionError, evaluate, parse_infix
from kvinject.adaptation_tasks.stated_answer import find_numbers, stated_part, without_negations

RELATIVE_TOLERANCE = Fraction(1, 10**6)

_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?", re.IGNORECASE)
# a full stop that ends a sentence: not a decimal point, not part of an ellipsis ("40... no, 45")
_SENTENCE_END = re.compile(r"(?<!\.)\.(?!\.)(?=\s|$)|\n")
_SENTENCE_SPLIT = re.compile(r"(?<=[^.][.!?])\s+|\n+")
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|\\,|\\ |~)(?=\d{3}(?!\d))")
_LATEX_OPERATORS = ((r"\times", "*"), (r"\cdot", "*"), (r"\div", "/"), ("×", "*"), ("÷", "/"), ("\u2212", "-"))
_ARITHMETIC = re.compile(r"[\d.\s()+\-*/]+")
# A sentence that looks back at the value before the change; its number is not the final answer.
_RESTATES_EARLIER_VALUE = re.compile(
    r"\b(?:originally|initially|at first|previously|to begin with|at the start|the original|in the original|"
    r"the old|(?:started|began) with|used to|would have been|before the change)\b",
    re.IGNORECASE,
)


def _plain(text: str) -> str:
    """LaTeX spellings of separators, operators and text in their plain form."""
    text = _LATEX_THOUSANDS.sub(",", text)
    for latex, plain in _LATEX_OPERATORS:
        text = text.replace(latex, plain)
    text = _LATEX_TEXT.sub(r"\1", text)
    return _LATEX_FRACTION.sub(r"\1/\2", text)


def parse_number(text: str) -> Fraction | None:
    """The value of `text` when it is plain arithmetic (`8 * 5`, `540.`), else its first number (or fraction)."""
    text = _plain(text)
    value = _arithmetic_value(text)
    if value is not None:
        return value
    numbers = find_numbers(text)
    return numbers[0].value if numbers else None


def _arithmetic_value(text: str) -> Fraction | None:
    candidate = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text.strip().strip("$").strip().rstrip("."))  # thousands only
    if not candidate or not _ARITHMETIC.fullmatch(candidate) or not re.search(r"\d", candidate):
        return None
    try:
        return evaluate(parse_infix(candidate, Const), {})
    except (ExpressionError, ZeroDivisionError):
        return None


def _result_of_chain(span: str) -> str:
    """`8 * 5 = 40` -> `40`: the last side of an equation chain is the result."""
    return span.rsplit("=", 1)[-1]


def _stated_value_text(span: str) -> str | None:
    """The answer a box or an answer sentence states: negations out, the chain's result, then arithmetic or
    the first number left."""
    stated = _result_of_chain(stated_part(span))
    if _arithmetic_value(stated) is not None:
        return stated.strip()
    numbers = find_numbers(stated)
    return numbers[0].text if numbers else None


def _closing_value_text(text: str) -> str | None:
    """Without a box or an answer sentence: the last number of the last sentence that states one and does not
    restate an earlier value (else of the last sentence that states one)."""
    sentences = [without_negations(sentence) for sentence in _SENTENCE_SPLIT.split(text)]
    with_numbers = [(sentence, numbers) for sentence in sentences if (numbers := find_numbers(sentence, lone_one=False))]
    if not with_numbers:
        return None
    fresh = [numbers for sentence, numbers in with_numbers if not _RESTATES_EARLIER_VALUE.search(sentence)]
    return (fresh or [with_numbers[-1][1]])[-1][-1].text


def extract_math_answer(text: str) -> str | None:
    """The text of the final answer (still unparsed), or None when the output has no number."""
    text = _plain(text)
    boxed = _last_boxed(text)
    if boxed is not None:
        answer = _stated_value_text(boxed)
        if answer is not None:
            return answer
    after_answer_is = [m.end() for m in _ANSWER_IS.finditer(text)]
    if after_answer_is:
        rest = text[after_answer_is[-1] :]
        end = _SENTENCE_END.search(rest)
        answer = _stated_value_text(rest[: end.start()] if end else rest)
        if answer is not None:
            return answer
    return _closing_value_text(text)


def same_number(value: Fraction, gold: Fraction) -> bool:
    """Whether ``value`` equals ``gold`` within RELATIVE_TOLERANCE (1e-6) of ``max(1, |gold|)``."""
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
