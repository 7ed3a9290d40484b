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
    """When a branch stops: an end-of-sequence id, a stop sequence in its newest ids, or its budget.

    The stop-sequence check is lm-eval's (HFLM's ``MultiTokenEOSCriteria``), so a branch stops where
    ``--model hf`` stops: a stop sequence counts once it is in the decoded last
    ``len(encode(stop)) + 2`` generated ids, special tokens decoded as text (so a special token named
    as a stop string stops the branch, as in HFLM). The two extra ids let a stop sequence generated
    in another tokenisation (``\n`` ``\n`` for ``\n\n``) be found. Each step decodes those few ids,
    not the whole generated text.
    """

    tokenizer: EngineTokenizer
    eos_ids: frozenset[int]
    stop_sequences: tuple[str, ...]
    windows: tuple[tuple[str, int], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        windows = tuple((stop, len(self.tokenizer.encode(stop, add_special_tokens=False)) + 2)
                        for stop in self.stop_sequences)
        object.__setattr__(self, "windows", windows)

    @property
    def lookback(self) -> int:
        """How many of the newest generated ids ``reason`` reads (at least 1: the EOS check)."""
        return max((window for _, window in self.windows), default=1)

    def reason(self, generated: Sequence[int], budget_left: int) -> str | None:
        """Why a branch must stop now, or None to continue. ``generated``: its generated ids
        (pre-injection ones included) ending with its newest token; only the last ``lookback``
        are read, so a caller may pass just those."""
        if generated[-1] in self.eos_ids:
            return "eos"
        tails: dict[int, str] = {}
        for stop, window in self.windows:
            if window not in tails:
                tails[window] = self.tokenizer.decode(list(generated[-window:]))
            if stop in tails[window]:
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
