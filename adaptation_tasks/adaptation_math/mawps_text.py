"""Turn a MAWPS problem back into natural text: numbers in, tokenisation artefacts (" .", "$ 5", "' a b '",
"Mary ’ s", "grown - ups", "M & M ’ s") out."""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Mapping

from kvinject.adaptation_tasks.adaptation_math.expression import format_number

_DETOKENISE = (
    (re.compile(r"[’‘]"), "'"),  # curly apostrophes as the straight ones the rest of the text uses
    (re.compile(r"(?<=[A-Za-z]) - (?=[A-Za-z])"), "-"),  # grown - ups -> grown-ups
    (re.compile(r"\b([A-Z]) & ([A-Z])\b"), r"\1&\2"),  # M & M -> M&M
    (re.compile(r"(?<=\w) (' ?s)\b"), r"\1"),  # Mary ' s -> Mary 's (joined below)
    (re.compile(r"(?<=\w)' s\b"), "'s"),
    (re.compile(r"\s+([.,?!;:%)\]])"), r"\1"),
    (re.compile(r"([($\[])\s+"), r"\1"),
    (re.compile(r"\s+(n't|'s|'re|'ve|'ll|'m|'d)\b", re.IGNORECASE), r"\1"),
    (re.compile(r"\b([A-Z][a-z]+s) '(?=\s)"), r"\1'"),  # the Wagners ' bill -> the Wagners' bill
    (re.compile(r"(?<=\s)'\s+(?=\d\d\b)"), "'"),  # a model ' 52 Mustang -> a model '52 Mustang
    (re.compile(r"(?<![\w'])'\s+([^']*?\S)\s+'(?![\w'])"), r"'\1'"),  # ' whack a mole ' -> 'whack a mole'
    (re.compile(r"\s{2,}"), " "),
)


def render_problem(segments: tuple[str | int, ...], values: Mapping[int, Fraction]) -> str:
    """The problem text with ``values`` in its slots, tokenisation artefacts removed, first letter capitalised."""
    text = "".join(part if isinstance(part, str) else format_number(values[part]) for part in segments)
    for pattern, replacement in _DETOKENISE:
        text = pattern.sub(replacement, text)
    text = text.strip()
    return text[:1].upper() + text[1:]


def split_question(text: str) -> tuple[str, str] | None:
    """(story, final question sentence), or None when the text is a single sentence."""
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)
    if len(sentences) < 2:
        return None
    return " ".join(sentences[:-1]), sentences[-1]
