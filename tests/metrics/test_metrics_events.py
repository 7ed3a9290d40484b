"""Time-to-event measures end to end (doc_metrics -> aggregation) on traces with a known truth:
stopped runs never reach the event, only the token budget censors, and without adaptation the
injection runs do not differ from the noise control."""

import math

import numpy as np
import pytest
from helpers import build_answers, build_trace, run_series

from kvinject.metrics import AdaptationSettings, doc_metrics, metric_aggregation

SETTINGS = AdaptationSettings(report="full", bootstrap_resamples=500, permutation_resamples=999)


def _adapting_at(time, length):
    t = np.arange(1, length + 1)
    return run_series(np.where(t >= time, 2.0, 0.1), np.where(t >= time, 0.1, 2.0))


def _aggregate(docs, settings=SETTINGS):
    keys = {key for doc in docs for key in doc}
    return {key: metric_aggregation(key, settings)([doc[key] for doc in docs if key in doc])
            for key in keys}


def _six_stuck_of_ten(stuck_stop_reason):
    """4 docs adapt at t = 8..11 (runs of 20 tokens cut by the budget); 6 stay stuck and their
    runs end at T = 4 with `stuck_stop_reason`. The noise runs never adapt."""
    docs = []
    for index in range(10):
        if index < 4:
            run, reasons = _adapting_at(8 + index, 20), ("max_new_tokens", "eos")
        else:
            run, reasons = _adapting_at(99, 4), (stuck_stop_reason, "eos")
        trace = build_trace({5: (run, _adapting_at(99, 20))}, doc_id=f"d{index}", stop_reasons=reasons)
        docs.append(doc_metrics(trace, build_answers([5], injection=(index < 4, index >= 4)), SETTINGS))
    return _aggregate(docs)


def test_six_stuck_runs_that_stopped_never_adapt():
    results = _six_stuck_of_ten("eos")
    assert results["stuck_rate@5"] == pytest.approx(0.6)
    assert results["adaptation_point_share@5"] == pytest.approx(0.4)
    assert results["adaptation_point_share_ci_low@5"] < 0.4 < results["adaptation_point_share_ci_high@5"]
    assert results["adaptation_point_median@5"] == math.inf   # not reached (was 9, CI [5, 11])
    assert (results["adaptation_point_never@5"], results["adaptation_point_censored@5"]) == (6, 0)
    assert results["adaptation_point_vs_noise@5"] == pytest.approx(0.4)


def test_budget_censored_runs_are_still_censored():
    results = _six_stuck_of_ten("max_new_tokens")
    assert (results["adaptation_point_never@5"], results["adaptation_point_censored@5"]) == (0, 6)
    # Kaplan-Meier: the 6 censored at 4 might still adapt; among those seen past 4 all did
    assert results["adaptation_point_share@5"] == pytest.approx(1.0)
    assert results["adaptation_point_median@5"] == 9.0


def test_shares_use_the_fixed_horizon_not_the_run_lengths(build_answers, build_trace):
    short = AdaptationSettings(report="full", horizon_tokens=9, bootstrap_resamples=50)
    docs = [doc_metrics(build_trace({5: (_adapting_at(8 + i % 4, 20), _adapting_at(99, 20))},
                                    doc_id=f"d{i}", stop_reasons=("eos", "eos")),
                        build_answers([5]), short) for i in range(8)]
    assert _aggregate(docs, short)["adaptation_point_share@5"] == pytest.approx(0.5)   # t = 8, 9


def test_without_adaptation_injection_does_not_differ_from_the_noise_control(build_answers, build_trace, run_series):
    """Injection and noise runs from the same per-token distribution (a_t wanders around 0.5):
    the event measures of the two do not differ (p-value not small; seeded, under this null the
    p-value is uniform so a fixed seed makes the assertion deterministic, not a 5% gamble)."""
    rng = np.random.default_rng(12)
    # threshold 0.5: the events must happen often under this null for the test to have something to test
    settings = AdaptationSettings(report="full", horizon_tokens=3, stabilization_tokens=2, adapted_threshold=0.5,
                                  bootstrap_resamples=50, permutation_resamples=999)
    docs = []
    for index in range(60):
        runs = [run_series(rng.exponential(size=12), rng.exponential(size=12) + 0.3) for _ in range(2)]
        trace = build_trace({5: tuple(runs)}, doc_id=f"d{index}", stop_reasons=("eos", "eos"))
        docs.append(doc_metrics(trace, build_answers([5], injection=(False, True)), settings))
    results = _aggregate(docs, settings)
    for metric in ("adaptation_point", "stabilization"):
        assert 0.1 < results[f"{metric}_share@5"] < 0.9          # the events do happen
        assert abs(results[f"{metric}_vs_noise@5"]) < 0.2
        assert results[f"pvalue_{metric}@5"] > 0.2
