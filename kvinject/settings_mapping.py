"""The one way a settings dataclass is built from a mapping (task metadata, a JSON flag, a saved config)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, what: str) -> T:
    """``cls(**mapping)``; None or {} gives the defaults. An unknown key raises ValueError naming it and
    listing the valid ones (``what`` names the kind, e.g. "adaptation setting"); the dataclass's own
    ``__post_init__`` checks the values."""
    mapping = dict(mapping or {})
    valid = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(mapping) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; valid {what}s: {', '.join(valid)}")
    return cls(**mapping)
