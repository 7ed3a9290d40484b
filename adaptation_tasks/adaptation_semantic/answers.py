"""Match a model's answer against the aliases of the two gold answers of a semantic pair.

The prompt asks for a short explanation ending in "The answer is ...", so a run that was injected
mid-answer can still state its final answer after the injection. The final answer is the text after
the last "answer is"; without one, it is whichever gold alias is mentioned last. Both sides are
normalised (accents, case, punctuation) and an alias counts only as a whole word sequence, so
"Paris." matches "Paris" but "Parisian" does not.
"""
from __future__ import annotations

import re
import unicodedata

_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*([^\n]*)", re.IGNORECASE)


def normalise(text: str) -> str:
    without_accents = "".join(
        char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char)
    )
    return " ".join(re.sub(r"[^0-9a-z]+", " ", without_accents.lower()).split())


def _stated_answer(text: str) -> str | None:
    """The rest of the line after the last "answer is", cut at the end of its sentence."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    stated = re.split(r"(?<=[^A-Z])\.(?:\s|$)", matches[-1].group(1))[0].strip()
    return stated or None


def _last_mention(text: str, aliases: list[str]) -> int:
    """Position (in the normalised text) of the last whole-word mention of any alias, or -1."""
    padded = f" {normalise(text)} "
    positions = [padded.rfind(f" {normalise(alias)} ") for alias in aliases if normalise(alias)]
    return max(positions, default=-1)


def match_semantic_answer(text: str, doc: dict) -> dict:
    """{"answer", "new", "old"}: the final answer and whether it names the alternative / original answer."""
    stated = _stated_answer(text)
    if stated is not None:
        return {
            "answer": stated,
            "new": _last_mention(stated, doc["alternative_aliases"]) >= 0,
            "old": _last_mention(stated, doc["original_aliases"]) >= 0,
        }
    new_at = _last_mention(text, doc["alternative_aliases"])
    old_at = _last_mention(text, doc["original_aliases"])
    if max(new_at, old_at) < 0:
        return {"answer": None, "new": False, "old": False}
    # Identical controls share their aliases, so both are found at the same place.
    latest = max(new_at, old_at)
    return {"answer": text.strip().splitlines()[0] if text.strip() else None, "new": new_at == latest, "old": old_at == latest}
