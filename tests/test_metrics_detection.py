"""CUSUM detector: the path, the calibration on noise runs, and its behaviour end to end."""

import numpy as np
import pytest

from kvinject.metrics import AdaptationSettings, doc_metrics, metric_aggregation
from kvinject.metrics.aggregations import detection_outcome
from kvinject.metrics.detection import calibrate, cusum, detection_time
from helpers import build_answers, build_trace, run_series

FAST = AdaptationSettings(bootstrap_resamples=50, permutation_resamples=50, per_layer=False)


def test_cusum_path_resets_at_zero():
    assert cusum([1.0, -2.0, 3.0, -0.5], drift=0.0).tolist() == [1.0, 0.0, 3.0, 2.5]
    assert cusum([1.0, 1.0, 1.0], drift=0.5).tolist() == [0.5, 1.0, 1.5]
    assert cusum([], drift=0.0).size == 0


def test_cusum_matches_the_recursion():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    expected, s = [], 0.0
    for value in x:
        s = max(0.0, s + value - 0.3)
        expected.append(s)
    assert cusum(x, 0.3) == pytest.approx(expected)


def test_calibration_allows_at_most_the_false_alarm_share_of_noise_runs():
    noise = [[float(peak)] for peak in range(1, 101)]   # CUSUM peaks 1..100 with drift 0
    calibration = calibrate(noise, false_alarm_rate=0.05, drift=0.0)
    assert calibration.threshold == 95.0
    assert calibration.noise_alarms == 5 and calibration.noise_runs == 100
    assert calibrate(noise[:10], 0.05, 0.0).threshold == 10.0   # fewer than 20 runs: no alarm
    assert calibrate(noise, 0.05, drift=None).drift == pytest.approx(50.5)
    assert calibrate([[1.0, float("inf")], [3.0]], 0.05, drift=None).drift == 2.0


def test_detection_time_is_the_first_alarm_or_censored():
    calibration = calibrate([[1.0, 1.0]], false_alarm_rate=0.05, drift=0.0)   # threshold 2
    assert detection_time([0.5, 1.0, 1.0, 0.0], calibration) == {"time": 3, "observed": True}
    assert detection_time([0.5, 1.0], calibration) == {"time": 2, "observed": False}
    assert detection_time([], calibration) == {"time": 0, "observed": False}


def _docs(rng, n_docs, shift_at=None, shift=3.0, length=20, control=False, statistic_shift=None):
    """Per-doc metrics of synthetic docs whose divergence from the old context is Exp(1) noise
    for both runs; the injection run's rises by `shift` from token `shift_at` on."""
    docs = []
    for index in range(n_docs):
        injection = rng.exponential(size=length)
        if shift_at is not None:
            injection[shift_at - 1:] += shift
        noise = rng.exponential(size=length)
        trace = build_trace(
            {5: (run_series(injection, track_attention=False, track_hidden=False),
                 run_series(noise, track_attention=False, track_hidden=False))},
            doc_id=f"doc-{index}", control=control, track_attention=False, track_hidden=False)
        docs.append(doc_metrics(trace, build_answers([5]), FAST))
    return docs


def _aggregate(docs, key, settings=FAST):
    return metric_aggregation(key, settings)([doc[key] for doc in docs if key in doc])


def test_detection_rate_stays_near_the_false_alarm_rate_without_a_change():
    rng = np.random.default_rng(1)
    replicates = [_aggregate(_docs(rng, 200), "detection_rate@5") for _ in range(5)]
    # 1000 injection runs from the noise distribution: the rate is at most 5% in expectation
    # (k / (n + 1) per replicate); 99.9% binomial band around 5% for n = 1000 is [2.9%, 7.5%].
    assert 0.029 <= np.mean(replicates) <= 0.075


def test_in_sample_noise_false_alarms_never_exceed_the_rate():
    rng = np.random.default_rng(2)
    docs = _docs(rng, 137)
    calibration = detection_outcome([doc["detection_rate@5"] for doc in docs], FAST).calibration
    assert calibration.noise_alarms <= int(0.05 * 137)


def test_detection_latency_recovers_a_known_shift():
    rng = np.random.default_rng(3)
    docs = _docs(rng, 100, shift_at=8, shift=8.0)
    latency = _aggregate(docs, "detection_latency@5")
    assert 8 <= latency <= 9   # the alarm needs about threshold / shift tokens past the change
    assert _aggregate(docs, "detection_rate@5") > 0.95
    assert _aggregate(docs, "detection_latency_censored@5") <= 5
    low, high = (_aggregate(docs, f"detection_latency_ci_{end}@5") for end in ("low", "high"))
    assert low <= latency <= high


def test_undetected_runs_are_censored_not_dropped():
    rng = np.random.default_rng(4)
    docs = _docs(rng, 40)   # no change: almost every injection run is censored
    censored = _aggregate(docs, "detection_latency_censored@5")
    rate = _aggregate(docs, "detection_rate@5")
    assert censored == pytest.approx(40 * (1 - rate))
    assert _aggregate(docs, "detection_latency@5") == 21.0   # median not reached: horizon + 1


def test_controls_give_the_false_positive_rate_of_a_detector_calibrated_on_their_noise():
    rng = np.random.default_rng(5)
    changed = _docs(rng, 60, shift_at=3)
    quiet_controls = _docs(rng, 40, control=True)
    loud_controls = _docs(rng, 20, shift_at=1, control=True)
    assert all(set(doc) == {"baseline_accuracy", "baseline_accuracy_ci_low",
                            "baseline_accuracy_ci_high", "control_false_positive_rate@5",
                            "control_false_positive_rate_ci_low@5",
                            "control_false_positive_rate_ci_high@5"} for doc in quiet_controls)
    assert not any("control_false_positive_rate@5" in doc for doc in changed)
    assert _aggregate(changed + quiet_controls, "control_false_positive_rate@5") <= 0.15
    assert _aggregate(changed + loud_controls, "control_false_positive_rate@5") == 1.0
    # controls neither calibrate nor enter the changed-problem detection
    assert _aggregate(changed + loud_controls, "detection_rate@5") == _aggregate(
        changed, "detection_rate@5")


def test_log_ratio_statistic_is_pages_likelihood_ratio_cusum():
    settings = AdaptationSettings(detection_statistic="log_ratio", cusum_drift=0.0,
                                  bootstrap_resamples=20, permutation_resamples=20)
    rng = np.random.default_rng(7)
    docs = []
    for index in range(60):
        before = rng.normal(-1.0, 0.5, size=20)           # the old context explains the tokens
        after = np.where(np.arange(20) >= 5, 2.0, before)  # the new one does from t = 6
        series = [run_series(np.ones(20), logp_new=ratios - 1.0, logp_old=-1.0,
                             track_attention=False, track_hidden=False)
                  for ratios in (after, before)]
        trace = build_trace({5: tuple(series)}, doc_id=f"d{index}", track_attention=False,
                            track_hidden=False)
        docs.append(doc_metrics(trace, build_answers([5]), settings))
    assert 6 <= _aggregate(docs, "detection_latency@5", settings) <= 7
