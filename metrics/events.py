"""Times to an event along one run's post-injection tokens, right-censored when never reached.

An event time is a token count t in 1..T. A run that never reaches the event is censored at T,
its length (T = 0 for a run with no post-injection token). Each function returns
{"time": int, "observed": bool}, the JSON-serialisable per-doc value of a time-to-event metric.
"""

from __future__ import annotations

import numpy as np


def event(time: int, observed: bool) -> dict:
    return {"time": int(time), "observed": bool(observed)}


def first_time(condition) -> dict:
    """First t (1-based) at which the boolean series holds; censored at T if it never does."""
    condition = np.asarray(condition, dtype=bool)
    hits = np.flatnonzero(condition)
    if hits.size:
        return event(hits[0] + 1, True)
    return event(condition.size, False)


def stabilization_time(condition, hold_tokens: int | None) -> dict:
    """First t from which the condition holds for `hold_tokens` consecutive tokens.

    hold_tokens None: it must hold from t to the end of the run. A streak cut short by the end of
    the run does not count (it was not seen to hold long enough), so that run is censored at T.
    """
    condition = np.asarray(condition, dtype=bool)
    length = condition.size
    if hold_tokens is None:
        failures = np.flatnonzero(~condition)
        start = failures[-1] + 1 if failures.size else 0
        return event(start + 1, True) if start < length else event(length, False)
    if hold_tokens > length:
        return event(length, False)
    # held[i] = number of tokens holding in condition[i : i + hold_tokens]
    held = np.convolve(condition.astype(int), np.ones(hold_tokens, dtype=int), mode="valid")
    start = first_time(held == hold_tokens)
    return start if start["observed"] else event(length, False)
