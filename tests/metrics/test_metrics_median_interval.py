"""The Kaplan-Meier median's interval (survival.kaplan_meier_median_interval): known values and
coverage of the true median by simulation, with runs that stop early, runs cut by a token budget
before and after the median, an unreached median and tiny samples."""
import math

import numpy as np
import pytest

from kvinject.metrics import AdaptationSettings, metric_aggregation
from kvinject.metrics.survival import kaplan_meier_median, kaplan_meier_median_interval

INF = math.inf


@pytest.mark.parametrize("times, observed, expected", [
    # Values of lifelines 0.30.3, median_survival_times(KaplanMeierFitter().fit(...).confidence_interval_)
    # (its exponential-Greenwood band is this log(-log S) band); lifelines took the never-runs as censored
    # at 10**6.
    (list(range(1, 11)), [1] * 10, (1.0, 8.0)),
    ([2, 3, 3, 5, 6, 8, 9, 12, 14, 20, INF, INF], [1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 0], (3.0, INF)),
    ([1, 1, 2, 4, 4, 4, 7, 7, 9, 15] + [INF] * 7, [1, 1, 1, 1, 0, 1, 1, 1, 0, 1] + [0] * 7, (4.0, INF)),
])
def test_median_interval_matches_known_values(times, observed, expected):
    assert kaplan_meier_median_interval(times, np.array(observed, dtype=bool)) == expected


def test_median_interval_degenerate_samples():
    assert all(math.isnan(end) for end in kaplan_meier_median_interval([], []))
    assert kaplan_meier_median_interval([INF] * 5, [False] * 5) == (INF, INF)   # nobody has the event
    # every run cut by the budget at 3 tokens before any event: the median is somewhere after them
    assert kaplan_meier_median_interval([3, 3, 3, 1], [False, False, False, True]) == (1.0, INF)
    assert kaplan_meier_median_interval([3, 3, 3], [False] * 3) == (4.0, INF)


def test_median_interval_holds_the_median():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        times = rng.integers(0, 20, n).astype(float)
        status = rng.integers(0, 3, n)          # 0 event, 1 censored, 2 never
        times[status == 2] = INF
        low, high = kaplan_meier_median_interval(times, status == 0)
        assert low <= kaplan_meier_median(times, status == 0) <= high


def _true_median(p_event: float, mean_length: float) -> float:
    """Median of T_eff = T if T < L else inf, T ~ Geometric(p_event) on 0, 1, ... (the token of the
    event), L ~ Geometric(1 / mean_length) on 1, 2, ... (the run's own length): F(t) = p (1 - r^(t+1))
    / (1 - r), r = (1 - p)(1 - q)."""
    q = 1 / mean_length
    r = (1 - p_event) * (1 - q)
    limit = p_event / (1 - r)
    if limit < 0.5:
        return INF
    return float(math.ceil(math.log(1 - 0.5 / limit) / math.log(r) - 1 - 1e-12))


def _payloads(rng, n, p_event, mean_length, budget):
    event_at = rng.geometric(p_event, n) - 1
    length = rng.geometric(1 / mean_length, n)
    payloads = []
    for t, stop in zip(event_at, length):
        if t < stop and t < budget:
            run = {"time": int(t), "status": "event"}
        elif stop < budget:
            run = {"time": int(stop), "status": "never"}     # stopped (EOS) without the event
        else:
            run = {"time": budget, "status": "censored"}     # the token budget ended it first
        payloads.append({"run": run, "noise": run})
    return payloads


@pytest.mark.parametrize("n", [5, 10, 30, 200])
@pytest.mark.parametrize("p_event, mean_length, budget", [
    (0.15, 40, 1000),    # median 4, runs stop early (EOS)
    (0.15, 40, 3),       # the budget ends runs before the median
    (0.05, 60, 20),      # median 15, budget after it, many runs cut
    (0.05, 20, 1000),    # median 35 (most runs stop first)
    (0.5, 10, 1000),     # median 1: ties at every time
    (0.03, 15, 1000),    # median not reached (+inf): under half ever adapt
])
def test_median_interval_covers_the_true_median(n, p_event, mean_length, budget):
    """Nominal 95%; 1,000 replications each, seeded; claimed (survival.py): at least 0.93."""
    median = _true_median(p_event, mean_length)
    settings = AdaptationSettings(report="full")
    low = metric_aggregation("adaptation_point_median_ci_low@5", settings)
    high = metric_aggregation("adaptation_point_median_ci_high@5", settings)
    rng = np.random.default_rng(n + int(p_event * 1000) + budget)
    covered = 0
    for _ in range(1000):
        payloads = _payloads(rng, n, p_event, mean_length, budget)
        covered += float(low(payloads)) <= median <= float(high(payloads))
    assert covered / 1000 >= 0.93, (median, covered)
