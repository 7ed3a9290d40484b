"""Kaplan-Meier summaries of times to an event (token counts) with censored and never-runs.

A "never" run (stopped without the event) has an infinite time: it stays in the risk set at every
t. A "censored" run (budget hit) leaves the risk set after its time. See events.py.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .events import CENSORED, EVENT, NEVER

# Survival probabilities are products of fractions: S = 0.5 exactly can come out a hair above.
_HALF = 0.5 + 1e-9


def unpack(events) -> tuple[np.ndarray, np.ndarray]:
    """times (float, inf for never) and event flags of a list of {"time", "status"}."""
    status = [item["status"] for item in events]
    times = np.array([np.inf if s == NEVER else item["time"] for s, item in zip(status, events)],
                     dtype=float)
    return times, np.array([s == EVENT for s in status], dtype=bool)


def _kaplan_meier(times, observed) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(distinct event times, runs at risk at each, events at each, S just after each); censorings at
    t count at risk at t."""
    times, observed = np.asarray(times, dtype=float), np.asarray(observed, dtype=bool)
    event_times = np.unique(times[observed])
    at_risk = (times[None, :] >= event_times[:, None]).sum(axis=1)
    events = (observed[None, :] & (times[None, :] == event_times[:, None])).sum(axis=1)
    return event_times, at_risk, events, np.cumprod(1.0 - events / at_risk)


def _first_at_most_half(event_times: np.ndarray, curve: np.ndarray) -> float:
    """The first event time at which ``curve`` (S or one of its bands) is <= 1/2; inf if none is."""
    reached = curve <= _HALF
    return float(event_times[reached][0]) if reached.any() else float("inf")


def survival_curve(times, observed) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier S(t) just after each distinct event time: (event times, S at them)."""
    event_times, _, _, survival = _kaplan_meier(times, observed)
    return event_times, survival


def share_by(times, observed, horizon: int) -> float:
    """Estimated share of runs with the event at t <= horizon, 1 - S(horizon); NaN if empty."""
    if np.size(times) == 0:
        return float("nan")
    event_times, survival = survival_curve(times, observed)
    before = event_times <= horizon
    return float(1.0 - survival[before][-1]) if before.any() else 0.0


def kaplan_meier_median(times, observed) -> float:
    """Median time to the event (tokens): the smallest t with S(t) <= 0.5.

    inf when not reached: the estimated share with the event never reaches one half (e.g. most
    runs stopped without it, or the rest is censored). Never a value that depends on the run
    lengths. NaN only for an empty sample.
    """
    if np.size(times) == 0:
        return float("nan")
    return _first_at_most_half(*survival_curve(times, observed))


def kaplan_meier_median_interval(times, observed, confidence_level: float = 0.95) -> tuple[float, float]:
    """Brookmeyer-Crowley interval of the median time to the event (tokens), ends possibly inf.

    Estimand: the median of the time to the event, a run that stops without it counting as never
    having it (+inf), so the median is inf when under half of the runs have the event. The interval
    holds every t at which S(t) = 1/2 is not rejected by the pointwise Greenwood test on the
    log(-log S) scale: its low end is the first event time at which the lower band of S is <= 1/2,
    its high end the first at which the upper band is (inf: never, the median may be unbounded).
    Beyond the last censoring (a run cut by the token budget) S is not identified, so while the
    upper band stays above 1/2 no t after it is rejected and the low end is at most the token after
    it. Coverage (tests/metrics/test_metrics_median_interval.py): at least 0.93 at the simulated
    sizes 5 to 200, with runs that stop early, runs cut by a budget before and after the median, and
    an unreached median. (NaN, NaN) for an empty sample.
    """
    if np.size(times) == 0:
        return float("nan"), float("nan")
    times, observed = np.asarray(times, dtype=float), np.asarray(observed, dtype=bool)
    event_times, at_risk, events, survival = _kaplan_meier(times, observed)
    z = stats.norm.ppf(0.5 + confidence_level / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Greenwood's sum; infinite once every run at risk had the event (S = 0, where both bands are 0).
        greenwood = np.cumsum(np.where(at_risk > events, events / (at_risk * (at_risk - events)), np.inf))
        spread = np.exp(z * np.sqrt(greenwood) / np.abs(np.log(survival)))
        lower = np.where(survival > 0, survival ** spread, 0.0)
        upper = np.where(survival > 0, survival ** (1 / spread), 0.0)

    low, high = _first_at_most_half(event_times, lower), _first_at_most_half(event_times, upper)
    censored = ~observed & np.isfinite(times)
    if high == np.inf and censored.any():
        low = min(low, float(times[censored].max()) + 1)
    return low, high


def log_rank_z(times, observed, group) -> np.ndarray:
    """Standardised log-rank statistic of group 1 against group 0 along the last axis.

    times: token counts (inf: never, stays at risk; -inf: not a member of the sample), observed:
    the event happened at that time, group: bool; all broadcast together, so leading axes can be
    permutations or bootstrap replicates. Z = sum_t (d1_t - d_t n1_t / n_t) / sqrt(sum_t V_t) over
    the distinct event times t (hypergeometric variance V_t); 0 where the variance is 0 (no event,
    or one group empty at every event time). Positive: group 1 has more (earlier) events.
    """
    times, observed, group = np.broadcast_arrays(
        np.asarray(times, dtype=float), np.asarray(observed, dtype=bool), np.asarray(group, dtype=bool))
    grid = np.unique(times[observed])
    if not grid.size:
        return np.zeros(times.shape[:-1])
    at_risk = times[..., None, :] >= grid[:, None]                    # (..., E, n)
    events = observed[..., None, :] & (times[..., None, :] == grid[:, None])
    members = group[..., None, :]
    n, d = at_risk.sum(axis=-1), events.sum(axis=-1)
    n1, d1 = (at_risk & members).sum(axis=-1), (events & members).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n > 0, n1 / n, 0.0)
        variance = np.where(n > 1, d * share * (1 - share) * (n - d) / (n - 1), 0.0).sum(axis=-1)
        excess = (d1 - d * share).sum(axis=-1)
        return np.where(variance > 0, excess / np.sqrt(variance), 0.0)


def counts(events) -> dict:
    """How many runs had each status."""
    status = [item["status"] for item in events]
    return {name: status.count(name) for name in (EVENT, CENSORED, NEVER)}


def share_estimable(events, horizon: int) -> bool:
    """Whether the Kaplan-Meier share within `horizon` is identified by these runs.

    Not when some run was censored before the horizon (the budget ended it first), no run that
    could still have the event was followed to the horizon (an event or a censoring at t >=
    horizon), and the estimate had not already reached 1 (every run at risk had its event): what
    the censored runs would have done before the horizon is then seen in no run. This is the
    case of every run of an injection point whose token budget ends before H. "Never" runs (they
    stopped) do not count as followed: they cannot show an event after they stopped.
    """
    if not events:
        return False
    if not any(item["status"] == CENSORED and item["time"] < horizon for item in events):
        return True
    if any(item["status"] != NEVER and item["time"] >= horizon for item in events):
        return True
    return share_by(*unpack(events), horizon) >= 1.0
