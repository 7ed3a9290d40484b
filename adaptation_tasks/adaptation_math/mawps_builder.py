"""Build the augmented math set from MAWPS problems: identical controls and three kinds of changed problem.

Deterministic for a given source and builder code (fixed seed, per-problem derived generators; the
dataset cache key hashes this package's modules). Numbers are changed by their occurrence in the text:
only a quantity whose value is written once in the text, is not also a constant of the equation and is
not 1 (which would need a singular noun) can change, so the equation leaf and the text occurrence are
the same thing. Every answer is `expression.evaluate` of the stored equation, every changed answer
differs from the original one, and the numbers read back from the final text must be the ones evaluated.
All variation types get the same mix of operation classes (only + and -, or some * or /), so that
variation type is not confounded with the kind of arithmetic.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from kvinject.adaptation_tasks.adaptation_math.added_step import make_step, step_question
from kvinject.adaptation_tasks.adaptation_math.expression import (
    BinOp,
    Const,
    Expr,
    ExpressionError,
    constants,
    evaluate,
    format_number,
    operation_values,
    operators,
    render,
    used_slots,
)
from kvinject.adaptation_tasks.adaptation_math.mawps_sources import SourceProblem, numbers_in_text
from kvinject.adaptation_tasks.adaptation_math.mawps_text import render_problem, split_question
from kvinject.adaptation_tasks.adaptation_math.story_checks import (
    source_problem_fault,
    story_fault,
    used_more_than_once,
)

SEED = 20240611
CHANGED_TYPES = ("single_number", "multiple_numbers", "added_step")
VARIATION_TYPES = ("identical",) + CHANGED_TYPES
OPERATION_CLASSES = ("additive", "multiplicative")  # only + and -, or at least one * or /
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


def operation_class(equation: Expr) -> str:
    """``additive`` when the equation uses only + and -, else ``multiplicative`` (OPERATION_CLASSES)."""
    return "additive" if operators(equation) <= {"+", "-"} else "multiplicative"


def build_augmented_set(problems: list[SourceProblem], spec: SetSpec = SetSpec()) -> list[dict]:
    """The shuffled docs of the set: ``spec``'s quota of each variation type, no source problem used twice, every
    type with added_step's mix of operation classes; InsufficientSourceError when a quota cannot be met."""
    pool = sorted(usable_problems(problems), key=lambda problem: problem.source_id)
    random.Random(SEED).shuffle(pool)
    quotas = spec.quotas()
    used: set[str] = set()
    # added_step first: its candidates are the fewest and mostly additive, so it takes every
    # multiplicative one it can; the other types then copy its mix of operation classes.
    multiplicative_first = sorted(pool, key=lambda problem: operation_class(problem.equation) == "additive")
    docs = _select(multiplicative_first, "added_step", quotas["added_step"], used)
    mix = Counter(doc["operation_class"] for doc in docs)
    for variation in ("multiple_numbers", "single_number", "identical"):
        if not mix:  # a set without added steps has no mix to copy
            docs += _select(pool, variation, quotas[variation], used)
            continue
        for operation, wanted in _proportional(mix, quotas[variation]).items():
            candidates = [problem for problem in pool if operation_class(problem.equation) == operation]
            docs += _select(candidates, variation, wanted, used)
    random.Random(SEED).shuffle(docs)
    return docs


def _select(candidates: list[SourceProblem], variation: str, wanted: int, used: set[str]) -> list[dict]:
    docs = []
    for problem in candidates:
        if len(docs) == wanted:
            break
        if problem.source_id in used:
            continue
        variant = make_variant(problem, variation, random.Random(f"{SEED}:{problem.source_id}:{variation}"))
        if variant is not None:
            docs.append(_doc(problem, variation, variant))
            used.add(problem.source_id)
    if len(docs) < wanted:
        classes = sorted({operation_class(problem.equation) for problem in candidates})
        raise InsufficientSourceError(
            f"only {len(docs)} of {wanted} {variation!r} problems ({'/'.join(classes) or 'no'} operations) could "
            f"be built from {len(candidates)} usable source problems"
        )
    return docs


def _proportional(mix: Counter, total: int) -> dict[str, int]:
    """`total` split over the operation classes in the proportions of `mix` (largest remainders)."""
    size = sum(mix.values())
    exact = {operation: Fraction(mix[operation] * total, size) for operation in OPERATION_CLASSES}
    shares = {operation: math.floor(value) for operation, value in exact.items()}
    by_remainder = sorted(OPERATION_CLASSES, key=lambda operation: (-(exact[operation] - shares[operation]), operation))
    for operation in by_remainder[: total - sum(shares.values())]:
        shares[operation] += 1
    return shares


def usable_problems(problems: list[SourceProblem]) -> list[SourceProblem]:
    """Problems whose equation gives the stated answer through positive whole numbers and that are not wrong
    as written (`story_checks`), one per template (MAWPS repeats some texts with other numbers; those would
    be near-duplicates in the set)."""
    by_template: dict[str, SourceProblem] = {}
    for problem in sorted(problems, key=lambda problem: problem.source_id):
        if not _answers_itself(problem) or source_problem_fault(problem) is not None:
            continue
        template = "#".join(part.lower() if isinstance(part, str) else "" for part in problem.segments)
        by_template.setdefault(" ".join(template.split()), problem)
    return list(by_template.values())


def _answers_itself(problem: SourceProblem) -> bool:
    """The equation gives the stated answer through positive whole numbers."""
    return _whole_positive_run(problem.equation, problem.numbers) and (
        evaluate(problem.equation, problem.numbers) == problem.stated_answer
    )


def left_out_problems(problems: list[SourceProblem]) -> list[tuple[str, str]]:
    """(source id, reason) of every problem that answers itself but is wrong as written, in id order: the
    list in the dataset card."""
    return [
        (problem.source_id, fault)
        for problem in sorted(problems, key=lambda problem: problem.source_id)
        if _answers_itself(problem) and (fault := source_problem_fault(problem)) is not None
    ]


def _whole_positive_run(equation: Expr, values: dict[int, Fraction]) -> bool:
    try:
        operands = [values[slot] for slot in used_slots(equation)]
        results = operation_values(equation, values)
    except (ExpressionError, KeyError):
        return False
    if not results:  # a bare number is no arithmetic problem
        return False
    return all(value > 0 and value.denominator == 1 for value in operands + results)


def make_variant(problem: SourceProblem, variation: str, rng: random.Random) -> _Variant | None:
    """The problem as ``variation`` changes it (question, equation, values, changed numbers, added sentence), or
    None when no such variant was found or its text does not read back the evaluated numbers."""
    original_text = render_problem(problem.segments, problem.numbers)
    if variation == "identical":
        return _Variant(original_text, problem.equation, problem.numbers, [], "")
    variant = _added_step(problem, original_text, rng) if variation == "added_step" else _changed_numbers(
        problem, several=variation == "multiple_numbers", rng=rng
    )
    if variant is None or not _text_agrees(problem, variant):
        return None
    return variant


def changeable_slots(problem: SourceProblem) -> list[int]:
    """Slots the equation uses once whose value is written once in the text, is no constant of the equation
    and is at least 2: changing such a number changes exactly one text occurrence and one leaf (a slot used
    twice, as in `n0 * (n0 - 1) * n1 / n1`, acts as a constant)."""
    in_text = Counter(problem.numbers[part] for part in problem.segments if isinstance(part, int))
    in_text.update(value for part in problem.segments if isinstance(part, str) for value in numbers_in_text(part))
    fixed = set(constants(problem.equation))
    repeated = used_more_than_once(problem.equation)
    return [
        slot
        for slot in used_slots(problem.equation)
        if slot not in repeated and in_text[problem.numbers[slot]] == 1 and problem.numbers[slot] not in fixed and problem.numbers[slot] >= 2
    ]


def _changed_numbers(problem: SourceProblem, several: bool, rng: random.Random) -> _Variant | None:
    slots = changeable_slots(problem)
    if len(slots) < (2 if several else 1):
        return None
    original_answer = evaluate(problem.equation, problem.numbers)
    taken = set(problem.numbers.values())
    for _ in range(_TRIES_PER_VARIANT):
        chosen = sorted(rng.sample(slots, rng.randint(2, len(slots)))) if several else [rng.choice(slots)]
        values = dict(problem.numbers)
        for slot in chosen:
            values[slot] = _nearby_whole_number(values[slot], rng)
        new_values = [values[slot] for slot in chosen]
        # a new value must not repeat another number of the text, or the text would stop saying which is which
        if set(new_values) & taken or len(set(new_values)) < len(new_values):
            continue
        if (_whole_positive_run(problem.equation, values) and evaluate(problem.equation, values) != original_answer
                and story_fault(problem, values, problem.equation) is None):
            changed = [
                {"original": format_number(problem.numbers[slot]), "alternative": format_number(values[slot])}
                for slot in chosen
            ]
            return _Variant(render_problem(problem.segments, values), problem.equation, values, changed, "")
    return None


def _nearby_whole_number(value: Fraction, rng: random.Random) -> Fraction:
    """A different whole number of at least 2, about 0.5-1.5x the original (small numbers get more room)."""
    low = max(2, math.ceil(value / 2))
    high = max(math.floor(value * 3 / 2), int(value) + 2)
    choice = rng.randint(low, high - 1)
    return Fraction(choice if choice < value else choice + 1)


def _added_step(problem: SourceProblem, original_text: str, rng: random.Random) -> _Variant | None:
    parts = split_question(original_text)
    if parts is None:
        return None
    story, question = parts
    match = step_question(story, question)
    if match is None:
        return None
    step = make_step(match, evaluate(problem.equation, problem.numbers), rng, story)
    if step is None:
        return None
    equation = BinOp(step.operation, problem.equation, Const(Fraction(step.amount)))
    if not _whole_positive_run(equation, problem.numbers) or story_fault(problem, problem.numbers, equation) is not None:
        return None
    return _Variant(f"{story} {step.sentence} {question}", equation, problem.numbers, [], step.sentence)


def _text_agrees(problem: SourceProblem, variant: _Variant) -> bool:
    """The numbers read back from the final text are the ones the answer was evaluated with."""
    expected = [
        number
        for part in problem.segments
        for number in (numbers_in_text(part) if isinstance(part, str) else [variant.values[part]])
    ]
    story_and_question = variant.question.replace(variant.added_sentence, "") if variant.added_sentence else variant.question
    return numbers_in_text(story_and_question) == expected


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
        "operation_class": operation_class(problem.equation),
        "changed_numbers": variant.changed_numbers,
        "added_sentence": variant.added_sentence,
    }
