"""Build the augmented math set from MAWPS problems: identical controls and three kinds of changed problem.

Deterministic for a given source and BUILDER_VERSION (fixed seed, per-problem derived generators).
Every answer is `expression.evaluate` of the stored equation; a variant is rejected when an operation
gives a non-positive or fractional value, or when its answer equals the original answer.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from fractions import Fraction

from kvinject.adaptation_tasks.adaptation_math.expression import (
    BinOp,
    Const,
    Expr,
    ExpressionError,
    evaluate,
    format_number,
    operation_values,
    render,
    used_slots,
)
from kvinject.adaptation_tasks.adaptation_math.mawps_sources import SourceProblem
from kvinject.adaptation_tasks.adaptation_math.mawps_text import render_problem, split_question

BUILDER_VERSION = "1"  # bump whenever a change to this module changes the built set
SEED = 20240611
CHANGED_TYPES = ("single_number", "multiple_numbers", "added_step")
VARIATION_TYPES = ("identical",) + CHANGED_TYPES
_TRIES_PER_VARIANT = 25


class InsufficientSourceError(RuntimeError):
    """The source has too few usable problems for the requested set."""


@dataclass(frozen=True)
class SetSpec:
    total: int = 500
    identical: int = 120

    def quotas(self) -> dict[str, int]:
        """Changed problems split evenly, the remainder going to the first types (380 -> 127/127/126)."""
        changed = self.total - self.identical
        share, remainder = divmod(changed, len(CHANGED_TYPES))
        quotas = {kind: share + (i < remainder) for i, kind in enumerate(CHANGED_TYPES)}
        return {"identical": self.identical, **quotas}


@dataclass(frozen=True)
class _Variant:
    question: str
    equation: Expr
    values: dict[int, Fraction]
    changed_numbers: list[dict[str, str]]
    added_sentence: str


def build_augmented_set(problems: list[SourceProblem], spec: SetSpec = SetSpec()) -> list[dict]:
    pool = sorted(usable_problems(problems), key=lambda problem: problem.source_id)
    rng = random.Random(SEED)
    rng.shuffle(pool)
    quotas = spec.quotas()
    used: set[str] = set()
    docs: list[dict] = []
    # the most constrained type first, so the others do not use up its few candidates
    for variation in ("added_step", "multiple_numbers", "single_number", "identical"):
        wanted = quotas[variation]
        for problem in pool:
            if wanted == 0:
                break
            if problem.source_id in used:
                continue
            variant_rng = random.Random(f"{SEED}:{problem.source_id}:{variation}")
            variant = _make_variant(problem, variation, variant_rng)
            if variant is not None:
                docs.append(_doc(problem, variation, variant))
                used.add(problem.source_id)
                wanted -= 1
        if wanted:
            raise InsufficientSourceError(
                f"only {quotas[variation] - wanted} of {quotas[variation]} {variation!r} problems could be built "
                f"from {len(pool)} usable source problems"
            )
    rng.shuffle(docs)
    return docs


def usable_problems(problems: list[SourceProblem]) -> list[SourceProblem]:
    """Problems whose equation gives the stated answer through positive whole numbers, one per text."""
    by_text: dict[str, SourceProblem] = {}
    for problem in sorted(problems, key=lambda problem: problem.source_id):
        if not _whole_positive_run(problem.equation, problem.numbers):
            continue
        if evaluate(problem.equation, problem.numbers) != problem.stated_answer:
            continue
        text = render_problem(problem.segments, problem.numbers).lower()
        by_text.setdefault(text, problem)
    return list(by_text.values())


def _whole_positive_run(equation: Expr, values: dict[int, Fraction]) -> bool:
    try:
        operands = [values[slot] for slot in used_slots(equation)]
        results = operation_values(equation, values)
    except (ExpressionError, KeyError):
        return False
    if not results:  # a bare number is no arithmetic problem
        return False
    return all(value > 0 and value.denominator == 1 for value in operands + results)


def _make_variant(problem: SourceProblem, variation: str, rng: random.Random) -> _Variant | None:
    if variation == "identical":
        return _Variant(render_problem(problem.segments, problem.numbers), problem.equation, problem.numbers, [], "")
    if variation == "added_step":
        return _added_step(problem, rng)
    return _changed_numbers(problem, several=variation == "multiple_numbers", rng=rng)


def _changed_numbers(problem: SourceProblem, several: bool, rng: random.Random) -> _Variant | None:
    slots = used_slots(problem.equation)
    if len(slots) < (2 if several else 1):
        return None
    original_answer = evaluate(problem.equation, problem.numbers)
    for _ in range(_TRIES_PER_VARIANT):
        chosen = sorted(rng.sample(slots, rng.randint(2, len(slots)))) if several else [rng.choice(slots)]
        values = dict(problem.numbers)
        for slot in chosen:
            values[slot] = _nearby_whole_number(values[slot], rng)
        if _whole_positive_run(problem.equation, values) and evaluate(problem.equation, values) != original_answer:
            changed = [
                {"original": format_number(problem.numbers[slot]), "alternative": format_number(values[slot])}
                for slot in chosen
            ]
            return _Variant(render_problem(problem.segments, values), problem.equation, values, changed, "")
    return None


def _nearby_whole_number(value: Fraction, rng: random.Random) -> Fraction:
    """A different whole number about 0.5-1.5x the original (small numbers get a little more room)."""
    low = max(1, math.ceil(value / 2))
    high = max(math.floor(value * 3 / 2), int(value) + 2)
    choice = rng.randint(low, high - 1)
    return Fraction(choice if choice < value else choice + 1)


# Final question about a total or an amount left, with no quantity in it (a number there would be part
# of the story, and a step added before the question would come too early).
_TOTAL_OR_LEFT_QUESTION = re.compile(
    r"how many ((?:[a-z]+ ){0,2}?[a-z]+) (?:do|does|did|will|would|are|were|is|was|can|could|has|have|had)\b"
    r"[^0-9]*\b(in all|in total|altogether|now|left)\s*\?$",
    re.IGNORECASE,
)
_NOT_A_NOUN = {"more", "less", "fewer", "of", "times", "in", "total", "many", "much"}


def _added_step(problem: SourceProblem, rng: random.Random) -> _Variant | None:
    parts = split_question(render_problem(problem.segments, problem.numbers))
    if parts is None:
        return None
    story, question = parts
    match = _TOTAL_OR_LEFT_QUESTION.fullmatch(question)
    if match is None or match.group(1).split()[0].lower() in _NOT_A_NOUN:
        return None
    noun, kind = match.group(1).lower(), match.group(2).lower()
    original_answer = evaluate(problem.equation, problem.numbers)
    taken_away = kind == "left"
    if taken_away and original_answer < 3:
        return None
    step = rng.randint(2, min(20, int(original_answer) - 1) if taken_away else 20)
    equation = BinOp("-" if taken_away else "+", problem.equation, Const(Fraction(step)))
    if not _whole_positive_run(equation, problem.numbers):
        return None
    sentence = f"After that, {step} more {noun} are {'taken away' if taken_away else 'added'}."
    return _Variant(f"{story} {sentence} {question}", equation, problem.numbers, [], sentence)


def _doc(problem: SourceProblem, variation: str, variant: _Variant) -> dict:
    return {
        "id": f"mawps-{problem.source_id}",
        "source_id": problem.source_id,
        "variation_type": variation,
        "original_question": render_problem(problem.segments, problem.numbers),
        "original_equation": render(problem.equation, problem.numbers),
        "original_answer": format_number(evaluate(problem.equation, problem.numbers)),
        "alternative_question": variant.question,
        "alternative_equation": render(variant.equation, variant.values),
        "alternative_answer": format_number(evaluate(variant.equation, variant.values)),
        "changed_numbers": variant.changed_numbers,
        "added_sentence": variant.added_sentence,
    }
