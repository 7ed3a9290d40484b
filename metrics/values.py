"""The three values a result key can take that are not a number, as floats that say what they are.

lm-eval stores whatever an aggregation returns and formats floats with ``f"{v:.4f}"`` in its table,
so these subclasses keep the arithmetic of NaN / inf and print as words. In the results JSON
(kvinject/strict_json.py) both non-finite values become ``null``; "not reached" is told apart by the
``<metric>_median_reached@N`` key (metrics/README.md, "Values that are not numbers").
- NOT_ESTIMABLE (NaN): the data cannot give the value (no usable doc, a share the budget hides).
- NOT_REACHED (+inf): a Kaplan-Meier median that the estimated share never brings to one half.
- NO_TEST (NaN): a p-value key with fewer than two pairs; the result hook leaves the key out.
"""

from __future__ import annotations

import math


class _Named(float):
    """A float whose text (str, repr, any format spec) is a fixed word."""

    label = ""

    def __new__(cls, value: float):
        return super().__new__(cls, value)

    def __format__(self, spec: str) -> str:
        return self.label

    __str__ = __repr__ = lambda self: self.label

    def __reduce__(self):   # pickles (lm-eval gathers results across processes) as itself
        return (type(self), (float(self),))


class NotEstimable(_Named):
    label = "not estimable"


class NotReached(_Named):
    label = "not reached"


class NoTest(_Named):
    label = "no test"


NOT_ESTIMABLE = NotEstimable(float("nan"))
NOT_REACHED = NotReached(float("inf"))
NO_TEST = NoTest(float("nan"))


def readable(value):
    """A plain float result as one of the named values when it is not finite; else unchanged."""
    if isinstance(value, _Named) or not isinstance(value, float):
        return value
    if math.isnan(value):
        return NOT_ESTIMABLE
    if value == math.inf:
        return NOT_REACHED
    return value
