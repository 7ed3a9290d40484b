"""What the engine injects and records: one validated type that ``--model_args`` builds and the engine takes.

Torch-free, so ``--model_args`` are checked before torch or any weights load. The allowed strategies
and noise kinds are the trace schema's (kvinject/trace_schema.py), so a trace can only hold values
that this type accepted.
"""
from __future__ import annotations

import dataclasses
import re

from kvinject.trace_schema import NOISE_KINDS, STRATEGIES

# Written lists of injection points: 5:10:15 in --model_args (lm-eval's k=v,k=v form splits on commas),
# 5,10,15 in the kvinject commands' flags; ;, | and spaces also separate.
_POINT_SEPARATORS = re.compile(r"[,:;|\s]+")


def split_injection_points(text: str) -> list[str]:
    """The items of a written list of injection points (the one grammar of every flag that takes one)."""
    return [item for item in _POINT_SEPARATORS.split(text.strip()) if item]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class InjectionSettings:
    """Raises ValueError naming the field; ``injection_points`` is stored sorted."""

    injection_points: tuple[int, ...] = (5, 10, 15)  # generated tokens before the injection (0 allowed)
    strategy: str = "append"  # append: add the new problem to the cache; replace: swap the prompt's cache
    noise: str = "random"  # control segment: random non-special tokens, or the injected tokens shuffled
    track_attention: bool = True  # attention mass per segment and layer after the injection
    track_hidden: bool = True  # hidden-state cosine to the old and new contexts per layer
    seed: int = 1234  # seeds the noise controls

    def __post_init__(self):
        points = tuple(self.injection_points)
        if not points:
            raise ValueError("injection_points=(): give at least one point, e.g. injection_points=5:10:15")
        if not all(_is_int(n) and n >= 0 for n in points):
            raise ValueError(f"injection_points={points!r}: expected integers >= 0")
        if len(set(points)) != len(points):
            raise ValueError(f"injection_points={points!r}: points must be distinct")
        object.__setattr__(self, "injection_points", tuple(sorted(points)))
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise={self.noise!r}: expected one of {', '.join(NOISE_KINDS)}")
        for name in ("track_attention", "track_hidden"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: expected true or false")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r}: expected an integer >= 0")

    def as_dict(self) -> dict:
        """The JSON form stored in every trace's ``settings`` (with the doc's generation settings)."""
        values = dataclasses.asdict(self)
        values["injection_points"] = list(self.injection_points)
        return values
