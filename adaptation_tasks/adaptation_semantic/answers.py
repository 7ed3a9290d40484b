"""Match a model's answer against the aliases of the two gold answers of a semantic pair.

The prompt asks for a short explanation ending in "The answer is ...", so a run that was injected
mid-answer can still state its final answer after the injection. The final answer is the text after
the last "answer is"; without one, it is whichever gold alias is mentioned last. Both sides are
normalised (accents, case, punctuation) and an alias counts only as a whole word sequence, so
"Paris." matches "Paris" but "Parisian" does not. The stated answer ends at its sentence's full stop,
not at an abbreviation's ("St. George's", "Washington, D.C.") or an ellipsis. Negated and corrected
answers are left out ("Y, not X", "not X but Y", "Y (not X)", "Y rather than X", "Y instead of X",
"X — no, Y", "Y (X is ...'s capital)" state Y only: `adaptation_tasks.stated_answer`), and numbers spelled
out count as their digits ("twenty-six" is 26) when an answer is a number.
A one-word alias that is a common English word ("won", "tin") would match ordinary prose, so it counts only
as the whole stated answer (or its first word) or as the whole output. A symbol of one or two letters
("U", "W", "Fe") counts where the stated answer names it as a symbol: the first standalone token written
exactly so ("the symbol W", "U (uranium)"), never inside an abbreviation ("U.S.").
"""
from __future__ import annotations

import re
import unicodedata

from kvinject.adaptation_tasks.stated_answer import spelled_numbers_as_digits, stated_part, without_negations

_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*([^\n]*)", re.IGNORECASE)
# a full stop that ends a sentence: not after a single capital (D.C., U.S.) or a title abbreviation (St., Mt.)
# or an ellipsis ("Kyiv... no, Ulaanbaatar")
_SENTENCE_END = re.compile(
    r"(?<!\b[A-Z])(?<!\bSt)(?<!\bMt)(?<!\bFt)(?<!\bDr)(?<!\bMr)(?<!\bMs)(?<!\.)\.(?!\.)(?:\s|$)"
)
# a symbol as written: one capital, maybe one small letter, standing alone (not "U.S.", not "Wa")
_SYMBOL_TOKEN = re.compile(r"(?<![\w.])[A-Z][a-z]?(?![\w]|\.\w)")
# letters NFKD does not take apart: "ł" (złoty), "ø", "đ", "ß" ...
_UNDECOMPOSED_LETTERS = str.maketrans({
    "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ħ": "h", "Ħ": "H",
    "ı": "i", "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "Th",
})
# Reviewed list: one-word answers of the set that are also everyday English words.
COMMON_WORD_ANSWERS = frozenset({
    "won", "som", "sol", "pound", "dong", "yen", "real", "rand", "mark", "kina", "cop", "bam", "ron", "tala", "lek",
    "tin", "gold", "iron", "lead", "silver", "copper", "mercury", "zinc", "carbon", "neon", "oxygen",
    "concord", "providence", "phoenix", "male", "victoria", "stanley", "jackson", "lincoln", "madison",
    "dover", "columbia", "salem", "augusta", "helena", "pierre", "austin", "richmond", "charleston",
})


def normalise(text: str) -> str:
    """``text`` lower-cased without accents (also ł, ø, ß ...), every run of characters other than a-z and 0-9
    as one space, stripped."""
    without_accents = "".join(
        char for char in unicodedata.normalize("NFKD", text.translate(_UNDECOMPOSED_LETTERS))
        if not unicodedata.combining(char)
    )
    return " ".join(re.sub(r"[^0-9a-z]+", " ", without_accents.lower()).split())


def _stated_answer(text: str) -> str | None:
    """The rest of the line after the last "answer is", cut at the end of its sentence, negations left out."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    stated = stated_part(_SENTENCE_END.split(matches[-1].group(1))[0])
    return stated or None


def is_symbol(alias: str) -> bool:
    """An element symbol or a code of one or two letters ("U", "Fe")."""
    return _SYMBOL_TOKEN.fullmatch(alias) is not None


def is_weak_alias(alias: str) -> bool:
    """A single letter pair or a common word: found in prose by chance."""
    words = normalise(alias).split()
    return len(words) == 1 and (words[0] in COMMON_WORD_ANSWERS or (words[0].isalpha() and len(words[0]) <= 2))


def _is_exactly(text: str, alias: str, stated: bool) -> bool:
    """The whole text, or its first word as written ("U (uranium)", not "U.S."), is the alias ("the" aside);
    in a stated answer a symbol may also be its first symbol-like token ("the symbol W")."""
    if stated and is_symbol(alias):
        first_symbol = _SYMBOL_TOKEN.search(re.sub(r"^\s*the\b", "", text, flags=re.IGNORECASE))
        if first_symbol is not None and first_symbol.group(0) == alias:
            return True
    text = re.sub(r"^\s*the\s+", "", text, flags=re.IGNORECASE)
    first_word = text.strip().split()[0].strip(",;:()\"'") if text.strip() else ""
    return normalise(text) == normalise(alias) or (first_word.lower() == alias.lower() and first_word.isalpha())


def _last_mention(text: str, aliases: list[str], exact_text: str | None, stated: bool) -> int:
    """Position (in the normalised text) of the last whole-word mention of any alias, or -1. A weak alias
    counts only when `exact_text` (the stated answer, `stated`, or the whole output's first line) is exactly it."""
    padded = f" {normalise(text)} "
    positions = [
        padded.rfind(f" {normalise(alias)} ")
        for alias in aliases
        if normalise(alias) and (not is_weak_alias(alias) or (exact_text is not None and _is_exactly(exact_text, alias, stated)))
    ]
    return max(positions, default=-1)


def match_semantic_answer(text: str, doc: dict) -> dict:
    """{"answer", "new", "old"}: the final answer and whether it names the alternative / original answer."""
    numeric = any(re.fullmatch(r"\d+", alias) for alias in doc["original_aliases"] + doc["alternative_aliases"])
    if numeric:  # a lone "one" is a pronoun in prose, a number only as the stated answer
        text = spelled_numbers_as_digits(text)
    stated = _stated_answer(text)
    if stated is not None:
        stated = spelled_numbers_as_digits(stated, lone_one=True) if numeric else stated
        return {
            "answer": stated,
            "new": _last_mention(stated, doc["alternative_aliases"], stated, stated=True) >= 0,
            "old": _last_mention(stated, doc["original_aliases"], stated, stated=True) >= 0,
        }
    text = without_negations(text)
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    new_at = _last_mention(text, doc["alternative_aliases"], first_line, stated=False)
    old_at = _last_mention(text, doc["original_aliases"], first_line, stated=False)
    if max(new_at, old_at) < 0:
        return {"answer": None, "new": False, "old": False}
    # Identical controls share their aliases, so both are found at the same place.
    latest = max(new_at, old_at)
    return {"answer": text.strip().splitlines()[0] if text.strip() else None, "new": new_at == latest, "old": old_at == latest}
