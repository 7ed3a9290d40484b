"""Answer matching for your own pairs: numerically when every gold answer is a number, else by aliases."""
from __future__ import annotations

from kvinject.adaptation_tasks.adaptation_math.answers import match_math_answer
from kvinject.adaptation_tasks.adaptation_semantic.answers import match_semantic_answer


def match_pair_answer(text: str, doc: dict) -> dict:
    """{"answer", "new", "old"}: the math matcher against every numeric alias, or the semantic alias matcher."""
    if doc["answer_kind"] != "number":
        return match_semantic_answer(text, doc)
    results = [match_math_answer(text, {"original_answer": old, "alternative_answer": new})
               for old in doc["original_aliases"] for new in doc["alternative_aliases"]]
    return {"answer": results[0]["answer"], "new": any(r["new"] for r in results), "old": any(r["old"] for r in results)}
