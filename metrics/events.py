"""Times to an event along one run's post-injection tokens, with the three outcomes a run can have.

An event time is a token count t in 1..T (T = len(post_ids)). A run without the event is
- "censored" at T when it was cut off by the token budget (stop_reason max_new_tokens): it might
  still have reached the event;
- "never" when it stopped by itself (EOS, a stop sequence): it will not reach the event, its time
  is infinite (Kaplan-Meier keeps it at risk forever instead of moving its weight onto others).
Each function returns {"time": int, "status": "event" | "censored" | "never"}, the JSON value of
one run; "time" is the run length T for a run without the event.
"""

from __future__ import annotations

import numpy as np

EVENT, CENSORED, NEVER = "event", "censored", "never"
STATUSES = (EVENT, CENSORED, NEVER)


def event(time: int, status: str) -> dict:
    """The JSON value ``{"time": int, "status": status}``; ValueError for a status not in STATUSES."""
    if status not in STATUSES:
        raise ValueError(f"event status {status!r}, expected one of {STATUSES}")
    return {"time": int(time), "status": status}


def _no_event(length: int, budget_hit: bool) -> dict:
    return event(length, CENSORED if budget_hit else NEVER)


def first_time(condition, budget_hit: bool) -> dict:
    """First t (1-based) at which the boolean series holds; else censored/never (module doc)."""
    condition = np.asarray(condition, dtype=bool)
    hits = np.flatnonzero(condition)
    if hits.size:
        return event(hits[0] + 1, EVENT)
    return _no_event(condition.size, budget_hit)


def stabilization_time(condition, hold_tokens: int | None, budget_hit: bool) -> dict:
    """First t from which the condition holds for `hold_tokens` consecutive tokens.

    hold_tokens None: it must hold from t to the end of the run. A streak cut short by the end of
    the run does not count (it was not seen to hold long enough): censored if the budget cut it,
    never if the run stopped.
    """
    condition = np.asarray(condition, dtype=bool)
    length = condition.size
    if hold_tokens is None:
        failures = np.flatnonzero(~condition)
        start = failures[-1] + 1 if failures.size else 0
        return event(start + 1, EVENT) if start < length else _no_event(length, budget_hit)
    if hold_tokens > length:
        return _no_event(length, budget_hit)
    # held[i] = number of tokens holding in condition[i : i + hold_tokens]
    held = np.convolve(condition.astype(int), np.ones(hold_tokens, dtype=int), mode="valid")
    start = first_time(held == hold_tokens, budget_hit)
    return start if start["status"] == EVENT else _no_event(length, budget_hit)
