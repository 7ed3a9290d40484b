"""Reasoning steps of a generated text, the unit the PRM judge scores.

A step is a non-empty stripped piece of the text after splitting on newlines and then at sentence
ends: '.', '!' or '?' followed by whitespace. Decimals ("3.5") and "\\boxed{8}." stay whole because a
split needs the whitespace after the mark. A text with no such boundary is one step; an empty text
has no steps (its condition gets no score for that doc).
"""
from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_steps(text: str) -> list[str]:
    """The text's reasoning steps (module docstring): lines split at sentence ends, stripped, empty pieces dropped."""
    steps = []
    for line in text.splitlines():
        steps.extend(piece.strip() for piece in _SENTENCE_END.split(line) if piece.strip())
    return steps
