"""The CUSUM detector and its statistics on simulated data whose truth is known.

Per-token null: x_t ~ Exponential(1) (a KL-like statistic) for noise runs, and for injection runs
in the null simulations; a change adds `shift` nats to every injection token. All simulations are
vectorised over replicates with detection.detect, the function the aggregations use, and seeded.
Tolerances are binomial: a rate estimated from R independent replicates has standard error
sqrt(p (1 - p) / R); each bound below allows 3 of them.
"""

import math

import numpy as np
import pytest

from kvinject.metrics import AdaptationSettings, doc_metrics, metric_aggregation
from kvinject.metrics.aggregations import _rate_intervals, detection_outcome
from kvinject.metrics.detection import cusum, detect

ALPHA = 0.05


def _runs(rng, replicates, runs, length, horizon, shift=0.0):
    """(R, runs, horizon) statistic matrix of runs of `length` tokens (NaN past their end)."""
    x = rng.exponential(size=(replicates, runs, min(length, horizon))) + shift
    if length < horizon:
        x = np.concatenate([x, np.full((replicates, runs, horizon - length), np.nan)], axis=-1)
    return x


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


def test_threshold_is_the_conformal_order_statistic():
    peaks = np.arange(1.0, 41.0)                      # 40 noise runs of one token, drift 0
    found = detect(peaks[None, :, None], np.array([[[38.5], [39.5], [40.5]]]), ALPHA, 0.0)
    # k = ceil(41 * 0.95) = 39: the threshold is 39, alarms strictly above it
    assert found.alarm[0].tolist() == [0.0, 1.0, 1.0]
    assert found.bound[0] == pytest.approx([2 / 41] * 3)


@pytest.mark.parametrize("noise_runs, supported", [(18, False), (19, True), (20, True)])
def test_too_few_noise_runs_cannot_support_alpha(noise_runs, supported):
    assert (noise_runs >= 1 / ALPHA - 1 - 1e-9) is supported   # n >= 19 at alpha = 0.05
    rng = np.random.default_rng(noise_runs)
    found = detect(_runs(rng, 1, noise_runs, 10, 10), _runs(rng, 1, 5, 10, 10), ALPHA, None)
    rank = min(math.ceil((noise_runs + 1) * (1 - ALPHA) - 1e-9), noise_runs)
    assert found.bound[0] == pytest.approx([(noise_runs + 1 - rank) / (noise_runs + 1)] * 5)
    assert bool((found.bound[0] <= ALPHA).all()) is supported


@pytest.mark.parametrize("noise_runs", [20, 40, 100])
@pytest.mark.parametrize("noise_length", [16, 48], ids=["noise-shorter-than-H", "noise-longer-than-H"])
@pytest.mark.parametrize("length_factor", [1, 2, 4])
def test_false_alarm_rate_is_at_most_alpha_whatever_the_run_length(noise_runs, noise_length,
                                                                   length_factor):
    """Null: injection runs from the noise runs' per-token distribution, 1x/2x/4x as long as the
    noise runs, which are shorter (16) or longer (48) than H = 32: injection runs of 16..192
    tokens, shorter and longer than H. A fresh null run alarms with probability (n+1-k)/(n+1)
    <= alpha, and every run is decided (none is NaN); the old detector (drift = null mean, whole
    run) alarmed 5.9% / 20% / 48% at n = 100."""
    rng = np.random.default_rng(noise_runs * 10 + length_factor + noise_length)
    replicates, horizon = 3000, 32
    alarms = []
    for chunk in range(3):
        found = detect(_runs(rng, replicates // 3, noise_runs, noise_length, horizon),
                       _runs(rng, replicates // 3, 1, noise_length * length_factor, horizon),
                       ALPHA, None)
        assert (found.horizon == min(noise_length, horizon)).all()
        alarms.append(found.alarm[:, 0])
    alarms = np.concatenate(alarms)
    assert not np.isnan(alarms).any()
    rate = alarms.mean()
    assert rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / replicates), rate


def test_noise_runs_shorter_than_the_injection_runs_drop_no_run():
    """Noise runs of 8..16 tokens, injection runs of 24..40 (H = 32): the detector evaluates
    every run over H* = the 19th longest noise run, so no run is undecided, the false-alarm rate
    of null injection runs stays <= alpha + 3 simulation standard errors, and a real shift is
    still found. (Before: every run longer than all noise runs was undecided, the rate NaN.)"""
    rng = np.random.default_rng(12)
    replicates, noise_runs, horizon = 3000, 40, 32

    def cut(matrix, low, high):
        lengths = rng.integers(low, high + 1, size=matrix.shape[:-1])
        matrix[np.arange(horizon) >= lengths[..., None]] = np.nan
        return matrix

    noise = cut(_runs(rng, replicates, noise_runs, horizon, horizon), 8, 16)
    null_runs = cut(_runs(rng, replicates, 2, horizon, horizon), 24, 40)
    found = detect(noise, null_runs, ALPHA, None)
    assert not np.isnan(found.alarm).any() and not np.isnan(found.bound).any()
    assert (found.horizon >= 8).all() and (found.horizon <= 16).all()
    assert (found.length == found.horizon[:, None]).all()
    assert found.alarm.mean() <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / found.alarm.size)
    shifted = cut(_runs(rng, replicates, 2, horizon, horizon, shift=1.5), 24, 40)
    assert detect(noise, shifted, ALPHA, None).alarm.mean() > 0.5


def _length_payloads(rng, docs, run_length, noise_length, shift=0.0):
    return [{"run": (rng.exponential(size=run_length) + shift).tolist(),
             "noise": rng.exponential(size=noise_length).tolist(),
             "run_budget_hit": True, "noise_budget_hit": True, "control": False}
            for _ in range(docs)]


def test_detection_keys_use_the_noise_runs_length_and_are_never_nan():
    """The issue's example: noise runs of 16 tokens, injection runs of 32 (H = 32)."""
    rng = np.random.default_rng(13)
    settings = AdaptationSettings(report="full", bootstrap_resamples=50, permutation_resamples=99)
    payloads = _length_payloads(rng, 30, 32, 16, shift=1.0)
    results = {key: metric_aggregation(key, settings)(payloads) for key in (
        "detection_rate@5", "detection_rate_ci_low@5", "detection_rate_ci_high@5",
        "detection_calibrated@5", "detection_false_alarm_bound@5", "n_undecided@5",
        "detection_horizon@5", "detection_latency_median@5", "detection_latency_vs_noise_pvalue@5")}
    assert not any(math.isnan(value) for value in results.values()), results
    assert results["n_undecided@5"] == 0 and results["detection_horizon@5"] == 16
    assert results["detection_calibrated@5"] == 1.0 and results["detection_rate@5"] > 0.5
    # a run cut at H* without an alarm is censored there (unobserved beyond), not "never"
    quiet = _length_payloads(rng, 30, 32, 16)
    assert metric_aggregation("detection_latency_never@5", settings)(quiet) == 0.0


def test_runs_without_any_noise_token_are_counted_undecided_and_uncalibrated():
    rng = np.random.default_rng(14)
    settings = AdaptationSettings(report="full", bootstrap_resamples=20)
    payloads = _length_payloads(rng, 25, 10, 0)
    assert metric_aggregation("n_undecided@5", settings)(payloads) == 25.0
    assert metric_aggregation("detection_calibrated@5", settings)(payloads) == 0.0
    assert str(metric_aggregation("detection_rate@5", settings)(payloads)) == "not estimable"
    payloads[0]["noise"] = [1.0, 1.0]   # one noise run: every run decided, uncalibrated
    assert metric_aggregation("n_undecided@5", settings)(payloads) == 0.0
    assert metric_aggregation("detection_calibrated@5", settings)(payloads) == 0.0


def test_false_alarm_rate_holds_for_runs_shorter_than_the_horizon():
    """Mixed lengths: a run of L < H tokens is compared with the noise runs of >= L tokens, a
    longer one cut at H* (the 19th longest noise run), so at least 19 noise runs calibrate every
    run: all are decided and calibrated, and the alarm rate stays <= alpha."""
    rng = np.random.default_rng(11)
    replicates, noise_runs, horizon = 3000, 60, 32
    noise = _runs(rng, replicates, noise_runs, horizon, horizon)
    lengths = rng.integers(8, horizon + 1, size=(replicates, noise_runs))
    noise[np.arange(horizon)[None, None, :] >= lengths[..., None]] = np.nan
    run = _runs(rng, replicates, 1, horizon, horizon)
    run[np.arange(horizon)[None, None, :] >= rng.integers(8, horizon + 1, size=(replicates, 1, 1))] = np.nan
    found = detect(noise, run, ALPHA, None)
    decided = ~np.isnan(found.alarm[:, 0])
    assert decided.all()   # every run is evaluated over at most H*, which noise runs cover
    assert (found.bound[:, 0] <= ALPHA).all()
    assert (found.length[:, 0] < np.sum(~np.isnan(run[:, 0]), axis=-1)).any()   # some are cut
    assert found.alarm.mean() <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / replicates)


def test_latency_of_a_fixed_shift_does_not_depend_on_the_run_length():
    """A 1-nat shift from the first token, runs of T = 40 and T = 160 tokens: median latency over
    replicate data sets agrees within simulation error (the old detector: 14 vs 29 tokens)."""
    rng = np.random.default_rng(3)
    medians = {}
    for length in (40, 160):
        found = detect(_runs(rng, 200, 100, length, 32), _runs(rng, 200, 100, length, 32, shift=1.0),
                       ALPHA, None)
        times = np.where(found.alarm == 1, found.time, np.inf)
        medians[length] = np.median(times, axis=1)
    assert np.isfinite(medians[40]).all() and np.isfinite(medians[160]).all()
    difference = medians[40].mean() - medians[160].mean()
    standard_error = math.sqrt(medians[40].var() / 200 + medians[160].var() / 200)
    assert abs(difference) <= 3 * standard_error + 1e-9, (medians[40].mean(), medians[160].mean())


def test_run_length_past_the_horizon_changes_nothing_end_to_end(build_answers, build_trace, run_series):
    rng = np.random.default_rng(4)
    settings = AdaptationSettings(report="full", bootstrap_resamples=50, permutation_resamples=99)
    results = {}
    series = [(rng.exponential(size=160) + 1.0, rng.exponential(size=160)) for _ in range(30)]
    for length in (40, 160):
        docs = [doc_metrics(build_trace({5: (run_series(run[:length]), run_series(noise[:length]))},
                                        doc_id=f"d{i}"), build_answers([5]), settings)
                for i, (run, noise) in enumerate(series)]
        results[length] = {key: metric_aggregation(key, settings)([doc[key] for doc in docs])
                           for key in ("detection_latency_median@5", "detection_rate@5",
                                       "detection_rate_ci_low@5")}
    assert results[40] == results[160]


def _detection_payloads(rng, docs, horizon, shift, controls=0, control_shift=0.0):
    payloads = []
    for index in range(docs + controls):
        control = index >= docs
        run = rng.exponential(size=horizon) + (control_shift if control else shift)
        payloads.append({"run": run.tolist(), "noise": rng.exponential(size=horizon).tolist(),
                         "run_budget_hit": True, "noise_budget_hit": True, "control": control})
    return payloads


def test_detection_rate_interval_covers_the_truth_at_least_90_percent_of_the_time():
    """Nominal 95%, 40 docs, 200 replications, the calibration re-estimated in every resample.
    Truth: P(an injection run's peak > the null peak's 95% quantile), by Monte Carlo on 200k
    runs. Measured once over 600 replications: coverage 0.94, so with 200 the standard error is
    0.017 and 0.90 lies 2.4 of them below. (With the calibration held fixed: 65%.)"""
    horizon, shift, docs = 16, 0.5, 40
    rng = np.random.default_rng(8)
    drift = 1.0   # the null mean, which the detector estimates from the noise runs
    null_peaks = cusum(rng.exponential(size=(200_000, horizon)), drift).max(axis=-1)
    run_peaks = cusum(rng.exponential(size=(200_000, horizon)) + shift, drift).max(axis=-1)
    truth = float(np.mean(run_peaks > np.quantile(null_peaks, 1 - ALPHA)))
    assert 0.3 < truth < 0.7
    settings = AdaptationSettings(horizon_tokens=horizon, bootstrap_resamples=200)
    replications, covered = 200, 0
    for _ in range(replications):
        payloads = _detection_payloads(rng, docs, horizon, shift)
        low, high = _rate_intervals(payloads, settings)[False]
        covered += low <= truth <= high
    assert covered / replications >= 0.90, covered / replications


def test_a_rate_of_zero_or_one_gets_no_certain_interval():
    """0 alarms in 40 runs: the percentile bootstrap repeats 0 in every resample ([0, 0]); the reported
    interval contains Clopper-Pearson's [0, 1 - 0.025^(1/40)] = [0, 0.088]; likewise 40 of 40."""
    rng = np.random.default_rng(3)
    settings = AdaptationSettings(report="full", bootstrap_resamples=100, permutation_resamples=99)
    for shift, rate in ((-50.0, 0.0), (50.0, 1.0)):
        payloads = _detection_payloads(rng, 40, 16, shift)
        values = {stat: metric_aggregation(f"detection_rate{stat}@5", settings)(payloads)
                  for stat in ("", "_ci_low", "_ci_high")}
        assert values[""] == rate and _rate_intervals(payloads, settings)[False] == (rate, rate)
        width = 1 - 0.025 ** (1 / 40)
        assert values["_ci_low"] == pytest.approx(max(0.0, rate - width)) and values["_ci_high"] == pytest.approx(
            min(1.0, rate + width))


def test_one_detector_for_changed_docs_and_controls():
    rng = np.random.default_rng(5)
    settings = AdaptationSettings(report="full", bootstrap_resamples=100, permutation_resamples=999)
    quiet = _detection_payloads(rng, 60, 20, shift=2.0, controls=40)
    loud = quiet[:60] + _detection_payloads(rng, 0, 20, shift=0.0, controls=20, control_shift=2.0)

    def aggregate(payloads, key):
        return metric_aggregation(key, settings)(payloads)

    assert aggregate(quiet, "detection_rate@5") > 0.9
    assert aggregate(quiet, "control_false_positive_rate@5") <= 0.15
    assert aggregate(quiet, "detection_vs_controls_pvalue@5") < 0.01
    assert aggregate(loud, "control_false_positive_rate@5") == 1.0
    # the control rate is that of the same detector: calibrated on every doc's noise run
    outcome = detection_outcome(loud, settings)
    assert outcome.alarm[60:].mean() == aggregate(loud, "control_false_positive_rate@5")
    assert aggregate(loud, "detection_vs_controls_pvalue@5") > 0.05


def test_a_small_calibration_is_flagged_and_claims_no_alpha():
    rng = np.random.default_rng(6)
    settings = AdaptationSettings(report="full", bootstrap_resamples=20)
    small = _detection_payloads(rng, 10, 20, shift=2.0)
    assert metric_aggregation("detection_calibrated@5", settings)(small) == 0.0
    assert metric_aggregation("detection_false_alarm_bound@5", settings)(small) == pytest.approx(1 / 11)
    large = _detection_payloads(rng, 40, 20, shift=2.0)
    assert metric_aggregation("detection_calibrated@5", settings)(large) == 1.0


def test_log_ratio_statistic_is_pages_likelihood_ratio_cusum(build_answers, build_trace, run_series):
    settings = AdaptationSettings(detection_statistic="log_ratio", cusum_drift=0.0,
                                  bootstrap_resamples=20, permutation_resamples=20, report="full")
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
    key = "detection_latency_median@5"
    assert 6 <= metric_aggregation(key, settings)([doc[key] for doc in docs]) <= 7


LATENCY_TESTS = ("detection_latency_vs_noise_pvalue@5", "detection_latency_vs_controls_pvalue@5")


def _mixed_length_payloads(rng, docs, horizon, controls):
    """Null payloads whose runs have random lengths (2..horizon) and end either by the budget
    or by stopping early, drawn alike for every run."""
    payloads = _detection_payloads(rng, docs, horizon, shift=0.0, controls=controls)
    for payload in payloads:
        for run in ("run", "noise"):
            payload[run] = payload[run][:int(rng.integers(2, horizon + 1))]
            payload[f"{run}_budget_hit"] = bool(rng.random() < 0.5)
    return payloads


@pytest.mark.parametrize("mixed_lengths", [False, True], ids=["full-horizon", "stopped-and-short"])
def test_latency_tests_hold_their_level_when_nothing_changes(mixed_lengths):
    """Null: injection, noise and control runs all from one per-token distribution (and, mixed,
    one distribution of lengths and endings), 20 changed docs and 6 controls (the datasets'
    share). 300 replications: each test rejects at 5% at most 0.05 + 3 standard errors of the
    time (permutation p-values are exact in distribution)."""
    rng = np.random.default_rng(9)
    settings = AdaptationSettings(report="full", horizon_tokens=16, permutation_resamples=99)
    replications = 300
    rejections = dict.fromkeys(LATENCY_TESTS, 0)
    for _ in range(replications):
        payloads = (_mixed_length_payloads(rng, 20, 16, controls=6) if mixed_lengths
                    else _detection_payloads(rng, 20, 16, shift=0.0, controls=6))
        for key in LATENCY_TESTS:
            pvalue = metric_aggregation(key, settings)(payloads)
            assert 0 < pvalue <= 1, (key, pvalue)   # a NaN would pass the level check vacuously
            rejections[key] += pvalue <= ALPHA
    bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / replications)
    assert all(count / replications <= bound for count in rejections.values()), rejections


def test_latency_tests_find_a_real_shift():
    rng = np.random.default_rng(10)
    settings = AdaptationSettings(report="full", horizon_tokens=16, permutation_resamples=999)
    payloads = _detection_payloads(rng, 40, 16, shift=1.5, controls=12)
    for key in LATENCY_TESTS:
        assert metric_aggregation(key, settings)(payloads) < 0.01, key
    without_controls = _detection_payloads(rng, 40, 16, shift=1.5)
    assert math.isnan(metric_aggregation(LATENCY_TESTS[1], settings)(without_controls))
    only_controls = _detection_payloads(rng, 0, 16, shift=1.5, controls=12)
    assert math.isnan(metric_aggregation(LATENCY_TESTS[0], settings)(only_controls))

