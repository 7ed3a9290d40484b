"""What the engine needs from a tokenizer, and the text-level rules built on it.

The engine only encodes segments, decodes generated ids and reads a few special ids (the
``EngineTokenizer`` protocol; a Hugging Face tokenizer satisfies it). Prompt encoding and stop
handling follow lm-eval's HFLM so the baseline text matches what ``--model hf`` would return.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence


class EngineTokenizer(Protocol):
    eos_token_id: int | None
    bos_token_id: int | None
    all_special_ids: list[int]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    def __len__(self) -> int: ...  # vocabulary size, special tokens included


def encode_prompt(tokenizer: EngineTokenizer, text: str) -> list[int]:
    """The tokenizer's own special tokens (e.g. BOS) are added unless the text already starts with
    the BOS string, as lm-eval's HFLM.tok_encode does for a rendered chat template."""
    bos = tokenizer.bos_token_id
    starts_with_bos = bos is not None and text.startswith(tokenizer.decode([bos]))
    return list(tokenizer.encode(text, add_special_tokens=not starts_with_bos))


def encode_segment(tokenizer: EngineTokenizer, text: str) -> list[int]:
    """A segment placed after other tokens: no special tokens, tokenised on its own."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def decode_generated(tokenizer: EngineTokenizer, ids: Sequence[int]) -> str:
    """The generated ids as text, special tokens skipped (as HFLM decodes a generation)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def truncate_at_stop(text: str, stop_sequences: Sequence[str]) -> str:
    """The text before the earliest stop sequence (HFLM splits on each ``until`` term in turn)."""
    for stop in stop_sequences:
        text = text.split(stop)[0]
    return text


@dataclasses.dataclass(frozen=True)
class StopRule:
    """When a branch stops: an end-of-sequence id, a stop sequence in its decoded text, or its budget."""

    tokenizer: EngineTokenizer
    eos_ids: frozenset[int]
    stop_sequences: tuple[str, ...]

    def reason(self, generated: Sequence[int], budget_left: int) -> str | None:
        """Why a branch whose generated ids (all of them, pre-injection ones included) end with its
        newest token must stop now, or None to continue."""
        if generated[-1] in self.eos_ids:
            return "eos"
        if self.stop_sequences:
            text = decode_generated(self.tokenizer, generated)
            if any(stop in text for stop in self.stop_sequences):
                return "stop_sequence"
        if budget_left <= 0:
            return "max_new_tokens"
        return None


def eos_ids(tokenizer: EngineTokenizer, model) -> frozenset[int]:
    """The tokenizer's EOS plus the model's generation_config EOS ids (chat models end turns there)."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    return frozenset(i for i in ids if i is not None)
