"""Strict JSON for what lm-eval writes: no NaN or Infinity in ``results_<date>.json`` or the samples.

Python's json writes float NaN / inf as the bare words ``NaN`` / ``Infinity``, which ``JSON.parse``,
``jq`` and most leaderboard sites reject. The one encoding, used for every file lm-eval writes for
a run (wrapped around ``EvaluationTracker.save_results_aggregated`` / ``save_results_samples`` by
the start-up hook, kvinject/_autoload.py):
- a non-finite float is written as ``null``: "not estimable" (NaN) or, for a Kaplan-Meier median,
  "not reached" (+inf);
- the two are told apart by the key ``<metric>_median_reached@N`` (1 reached, 0 not reached,
  ``null`` no data) that every median key has beside it (kvinject.metrics.keys): a null median is
  "not reached" where that key is 0, a null interval end of a median (``_median_ci_low``,
  ``_median_ci_high``: +inf, unbounded) wherever it is 0 or 1.
``decoded_value`` turns a value read back from such a file into the named float that says which
(kvinject.metrics.values), as ``kvinject report`` shows it.
"""
from __future__ import annotations

import functools
import math

from kvinject.metrics.values import NOT_ESTIMABLE, NOT_REACHED


def strict_json(value):
    """``value`` with every non-finite float (at any depth of dicts, lists, tuples) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def writes_strict_json(save):
    """An EvaluationTracker save method whose every argument is made strict JSON first."""

    @functools.wraps(save)
    def strict_save(self, *args, **kwargs):
        return save(self, *strict_json(args), **strict_json(kwargs))

    return strict_save


def decoded_value(name: str, value, results: dict, suffix: str = ""):
    """The value of result `name` (e.g. ``adaptation_point_median@5``; `suffix` the filter part
    of the keys, e.g. ``",none"``) as a float: a null or non-finite value becomes NOT_REACHED
    when it is a median whose ``_median_reached`` key says 0, or a median's interval end whose
    ``_median_reached`` key says 0 or 1, else NOT_ESTIMABLE."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if value is not None and not isinstance(value, float):
        return value
    metric, at, point = name.partition("@")
    for end, data in (("", (0,)), ("_ci_low", (0, 1)), ("_ci_high", (0, 1))):
        if metric.endswith("_median" + end):
            reached = results.get(f"{metric.removesuffix(end)}_reached{at}{point}{suffix}")
            if reached in data or value == math.inf:
                return NOT_REACHED
    return NOT_ESTIMABLE
