"""Match a model's answer against the aliases of the two gold answers of a semantic pair.

The prompt asks for a short explanation ending in "The answer is ...", so a run that was injected
mid-answer can still state its final answer after the injection. The final answer is the text after
the last "answer is"; without one, it is whichever gold alias is mentioned last. Both sides are
normalised (accents, case, punctuation) and an alias counts only as a whole word sequence, so
"Paris." matches "Paris" but "Parisian" does not. The stated answer ends at its sentence's full stop,
not at an abbreviation's ("St. George's", "Washington, D.C."), and "X, not Y" states X only.
A one-word alias that is a letter or a common English word ("U", "won", "tin") would match ordinary
prose, so it counts only as the whole stated answer (or its first word) or as the whole output.
"""
from __future__ import annotations

import re
import unicodedata

_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*([^\n]*)", re.IGNORECASE)
# a full stop that ends a sentence: not after a single capital (D.C., U.S.) or a title abbreviation (St., Mt.)
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])(?<!\bSt)(?<!\bMt)(?<!\bFt)(?<!\bDr)(?<!\bMr)(?<!\bMs)\.(?:\s|$)")
_NEGATED_REST = re.compile(r",?\s+(?:and\s+)?(?:not|rather than|instead of)\s+[^,.;\n]*", re.IGNORECASE)
# Reviewed list: one-word answers of the set that are also everyday English words.
COMMON_WORD_ANSWERS = frozenset({
    "won", "som", "sol", "pound", "dong", "yen", "real", "rand", "mark", "kina", "cop", "bam", "ron", "tala", "lek",
    "tin", "gold", "iron", "lead", "silver", "copper", "mercury", "zinc", "carbon", "neon", "oxygen",
    "concord", "providence", "phoenix", "male", "victoria", "stanley", "jackson", "lincoln", "madison",
    "dover", "columbia", "salem", "augusta", "helena", "pierre", "austin", "richmond", "charleston",
})


def normalise(text: str) -> str:
    without_accents = "".join(
        char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char)
    )
    return " ".join(re.sub(r"[^0-9a-z]+", " ", without_accents.lower()).split())


def _stated_answer(text: str) -> str | None:
    """The rest of the line after the last "answer is", cut at the end of its sentence and before "not ..."."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    stated = _SENTENCE_END.split(matches[-1].group(1))[0]
    stated = _NEGATED_REST.split(stated)[0].strip()
    return stated or None


def is_weak_alias(alias: str) -> bool:
    """A single letter pair or a common word: found in prose by chance."""
    words = normalise(alias).split()
    return len(words) == 1 and (words[0] in COMMON_WORD_ANSWERS or (words[0].isalpha() and len(words[0]) <= 2))


def _is_exactly(text: str, alias: str) -> bool:
    """The whole text, or its first word as written ("U (uranium)", not "U.S."), is the alias ("the" aside)."""
    text = re.sub(r"^\s*the\s+", "", text, flags=re.IGNORECASE)
    first_word = text.strip().split()[0].strip(",;:()\"'") if text.strip() else ""
    return normalise(text) == normalise(alias) or (first_word.lower() == alias.lower() and first_word.isalpha())


def _last_mention(text: str, aliases: list[str], exact_text: str | None) -> int:
    """Position (in the normalised text) of the last whole-word mention of any alias, or -1. A weak alias
    counts only when `exact_text` (the stated answer or the whole output) is exactly it."""
    padded = f" {normalise(text)} "
    positions = [
        padded.rfind(f" {normalise(alias)} ")
        for alias in aliases
        if normalise(alias) and (not is_weak_alias(alias) or (exact_text is not None and _is_exactly(exact_text, alias)))
    ]
    return max(positions, default=-1)


def match_semantic_answer(text: str, doc: dict) -> dict:
    """{"answer", "new", "old"}: the final answer and whether it names the alternative / original answer."""
    stated = _stated_answer(text)
    if stated is not None:
        return {
            "answer": stated,
            "new": _last_mention(stated, doc["alternative_aliases"], stated) >= 0,
            "old": _last_mention(stated, doc["original_aliases"], stated) >= 0,
        }
    text = _NEGATED_REST.sub("", text)
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    new_at = _last_mention(text, doc["alternative_aliases"], first_line)
    old_at = _last_mention(text, doc["original_aliases"], first_line)
    if max(new_at, old_at) < 0:
        return {"answer": None, "new": False, "old": False}
    # Identical controls share their aliases, so both are found at the same place.
    latest = max(new_at, old_at)
    return {"answer": text.strip().splitlines()[0] if text.strip() else None, "new": new_at == latest, "old": old_at == latest}
