"""Match a model's answer against the two golds of an adaptation_update doc, each by its own kind.

A changed_entity update can move the question from a city to a count, so the two golds of one doc may
be of different kinds: a whole number is read as adaptation_math reads numbers (the "answer is"
sentence, then the last number), a city, colour or item as adaptation_semantic reads an alias (the
stated answer after the last "answer is", whole words). Both matchers are reused as they are.
"""
from __future__ import annotations

from kvinject.adaptation_tasks.adaptation_math.answers import match_math_answer
from kvinject.adaptation_tasks.adaptation_semantic.answers import match_semantic_answer
from kvinject.adaptation_tasks.docs import is_number


def _names(text: str, gold: str) -> dict:
    """The matcher's reading of `text` against one gold: {"answer", "named"}."""
    if is_number(gold):
        result = match_math_answer(text, {"original_answer": gold, "alternative_answer": gold})
    else:
        result = match_semantic_answer(text, {"original_aliases": [gold], "alternative_aliases": [gold]})
    return {"answer": result["answer"], "named": result["new"]}


def match_update_answer(text: str, doc: dict) -> dict:
    """{"answer", "new", "old"}: whether the final answer names the alternative / the original gold."""
    new, old = _names(text, doc["alternative_answer"]), _names(text, doc["original_answer"])
    return {"answer": new["answer"] if new["answer"] is not None else old["answer"],
            "new": new["named"], "old": old["named"]}
