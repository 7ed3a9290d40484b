"""Rules that find a MAWPS problem wrong as written, or a changed one impossible as told.

A source problem is left out (with the reason, listed in the dataset card) when
- its question is a yes/no question ("Does she have enough to make a pie?") but the gold is a number;
- its gold is not what the story's numbers give: the question asks for a total ("in all", "altogether",
  "together") and the equation leaves out a number of the very thing asked ("She also has 6 extra
  crayons" with gold 4 * 10), or a part the story takes out of the asked things is larger than the whole
  ("found 2 and 5 seashells ... 9 were cracked", gold 7);
- it is impossible in reading order (see below).
The same reading-order and part-of-whole rules are applied to every changed problem, so that a change
cannot make the story impossible ("picked 59 carrots ... threw out 67 of them ... picked 15 more": the
equation (59 + 15) - 67 stays positive, the story does not).
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Mapping

from kvinject.adaptation_tasks.adaptation_math.expression import (
    BinOp,
    Expr,
    ExpressionError,
    Slot,
    constants,
    evaluate,
    used_slots,
)
from kvinject.adaptation_tasks.adaptation_math.mawps_sources import SourceProblem

YES_NO = "yes/no question with a numeric gold"
IGNORED_COUNT = "the gold leaves out a number of the asked count"
PART_EXCEEDS_WHOLE = "a part taken out of the asked count is larger than the answer"
IMPOSSIBLE_ORDER = "a running count turns zero or negative in the story's order"

_AUXILIARY = re.compile(r"(?:^|,\s*)(?:does|do|did|is|are|was|were|can|could|will|would|should|has|have|had)\b", re.IGNORECASE)
_WH_WORD = re.compile(r"\b(?:how|what|which|who|whom|whose|when|where|why)\b", re.IGNORECASE)
_QUESTION = re.compile(r"[^.!?]*\?")
_ASKED_NOUN = re.compile(
    r"how many ((?:[a-z]+ ){0,3}?[a-z]+) (?:do|does|did|will|are|were|is|was|would|have|has|had|can|could)\b",
    re.IGNORECASE,
)
_ASKS_FOR_TOTAL = re.compile(r"\b(?:in all|altogether|in total|together|total)\b", re.IGNORECASE)
# a part of things already counted: "9 were cracked", "3 of them", "4 of the seashells"
_PART_OF_COUNTED = re.compile(r"^\s+(?:were|was|of them|of the)\b", re.IGNORECASE)


def source_problem_fault(problem: SourceProblem) -> str | None:
    """Why a source problem is wrong as written (one of the reasons above), or None."""
    text = _story_text(problem.segments, problem.numbers)
    if any(_AUXILIARY.search(q.strip()) and not _WH_WORD.search(q) for q in _QUESTION.findall(text)):
        return YES_NO
    if _ignores_asked_count(problem):
        return IGNORED_COUNT
    return story_fault(problem, problem.numbers, problem.equation)


def story_fault(problem: SourceProblem, values: Mapping[int, Fraction], equation: Expr) -> str | None:
    """Why the story told with `values` (and answered by `equation`) is impossible, or None."""
    if _part_exceeds_whole(problem, values, equation):
        return PART_EXCEEDS_WHOLE
    if not positive_in_reading_order(problem, values, equation):
        return IMPOSSIBLE_ORDER
    return None


def positive_in_reading_order(problem: SourceProblem, values: Mapping[int, Fraction], equation: Expr) -> bool:
    """The equation's added and subtracted terms, taken in the order the story tells them (a term's place is
    its first number's place in the text; terms without a number of the text come last), keep a positive
    running count. A story that does not start from a count it adds to (a comparison, "how many more to
    have 25") is no running count and passes."""
    # where each value is told; the k-th use of a value in the equation is its k-th place in the text (SVAMP
    # names the first of two equal numbers for both: "had 8 ... ate 8" is `n0 + n1 - n0`; MWPToolkit's reader
    # makes them constants); a constant the text does not state comes last
    places: dict[Fraction, list[int]] = {}
    for position, part in enumerate(problem.segments):
        if isinstance(part, int):
            places.setdefault(values[part], []).append(position)
    last = len(problem.segments)

    def told_at(expr: Expr) -> int:
        while isinstance(expr, BinOp):  # a product is told where its first number is
            expr = expr.left
        value = values[expr.index] if isinstance(expr, Slot) else expr.value
        told = places.get(value, [last])
        return told.pop(0) if len(told) > 1 else told[0]

    terms = sorted(_signed_terms(equation, 1), key=lambda term: told_at(term[1]))
    if terms[0][0] < 0:
        return True
    running = Fraction(0)
    try:
        for sign, term in terms:
            running += sign * evaluate(term, values)
            if running <= 0:
                return False
    except (ExpressionError, KeyError):
        return False
    return True


def _signed_terms(expr: Expr, sign: int) -> list[tuple[int, Expr]]:
    """`a - (b + c) + d * e` -> [(+1, a), (-1, b), (-1, c), (+1, d * e)]."""
    if isinstance(expr, BinOp) and expr.op in "+-":
        right_sign = sign if expr.op == "+" else -sign
        return _signed_terms(expr.left, sign) + _signed_terms(expr.right, right_sign)
    return [(sign, expr)]


def _unused_numbers(problem: SourceProblem, values: Mapping[int, Fraction]) -> list[tuple[Fraction, str]]:
    """(value, the text right after it) for each number of the text whose value the equation does not use
    (SVAMP's equation names the first of two equal numbers for both; MWPToolkit's reader makes a value written
    twice a constant)."""
    used = {values[slot] for slot in used_slots(problem.equation)} | set(constants(problem.equation))
    found = []
    for position, part in enumerate(problem.segments):
        if isinstance(part, int) and values[part] not in used:
            following = next((p for p in problem.segments[position + 1 :] if isinstance(p, str)), "")
            found.append((values[part], following))
    return found


def _ignores_asked_count(problem: SourceProblem) -> bool:
    text = _story_text(problem.segments, problem.numbers)
    asked = _ASKED_NOUN.search(text)
    if asked is None or not _ASKS_FOR_TOTAL.search(text[asked.start() :]):
        return False
    noun = r"\s+".join(map(re.escape, asked.group(1).split()))
    return any(
        re.match(rf"^\s+(?:[a-z]+\s+){{0,2}}?{noun}\b", following, re.IGNORECASE)
        for _, following in _unused_numbers(problem, problem.numbers)
    )


def _part_exceeds_whole(problem: SourceProblem, values: Mapping[int, Fraction], equation: Expr) -> bool:
    try:
        answer = evaluate(equation, values)
    except (ExpressionError, KeyError):
        return False
    return any(_PART_OF_COUNTED.match(following) and value > answer for value, following in _unused_numbers(problem, values))


def _story_text(segments: tuple[str | int, ...], values: Mapping[int, Fraction]) -> str:
    return " ".join(" ".join(part if isinstance(part, str) else str(values[part]) for part in segments).split())


def used_more_than_once(equation: Expr) -> set[int]:
    """Slots the equation uses twice or more (`n0 * (n0 - 1) * n1 / n1`): such a number acts as a constant
    of the equation, so changing it in the text does not change the answer the way the story says."""
    counts: dict[int, int] = {}

    def walk(expr: Expr) -> None:
        if isinstance(expr, Slot):
            counts[expr.index] = counts.get(expr.index, 0) + 1
        elif isinstance(expr, BinOp):
            walk(expr.left)
            walk(expr.right)

    walk(equation)
    return {slot for slot, count in counts.items() if count > 1}
