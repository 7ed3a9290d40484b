"""Length-matched control segments for the noise@N conditions.

``random``: uniformly drawn non-special token ids; ``shuffle``: the injected ids in a permuted order.
The generator is seeded from (settings.seed, doc_id, N) through SHA-256, so a control is identical
across runs, processes and batch compositions (Python's ``hash()`` is salted per process).
"""
from __future__ import annotations

import hashlib

import torch

from kvinject.trace_schema import NOISE_KINDS


def control_seed(seed: int, doc_id: str, point: int) -> int:
    """A 63-bit seed for one doc's control segment at one point: the same on every run and process."""
    digest = hashlib.sha256(f"{seed}\x1f{doc_id}\x1f{point}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def control_segment(kind: str, injected_ids: list[int], allowed_ids: torch.Tensor, seed: int) -> list[int]:
    """The control for ``injected_ids``; ``allowed_ids`` are the non-special ids random draws use."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "random":
        picks = torch.randint(len(allowed_ids), (len(injected_ids),), generator=generator)
        return allowed_ids[picks].tolist()
    if kind == "shuffle":
        order = torch.randperm(len(injected_ids), generator=generator).tolist()
        return [injected_ids[i] for i in order]
    raise ValueError(f"noise={kind!r}: expected one of {', '.join(NOISE_KINDS)}")


def non_special_ids(vocab_size: int, special_ids) -> torch.Tensor:
    """The token ids below ``vocab_size`` that are not special, the pool random controls draw from."""
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[[i for i in special_ids if 0 <= i < vocab_size]] = False
    return allowed.nonzero().squeeze(-1)
