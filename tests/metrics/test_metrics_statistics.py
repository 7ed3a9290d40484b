"""Kaplan-Meier median, permutation p-values, multiplicity corrections, bootstrap intervals."""

import math

import numpy as np
import pytest
from scipy import stats

from kvinject.metrics.resampling import (
    adjust_pvalues,
    bootstrap_interval,
    bootstrap_mean_interval,
    paired_permutation_pvalue,
)
from kvinject.metrics.survival import kaplan_meier_median, share_by


def test_kaplan_meier_median_on_a_known_censored_sample():
    # S(1) = 5/6, S(2) = 5/6 * 4/5 = 2/3 (one event, one censored at 2), S(3) = 2/3 * 2/3 = 4/9.
    times = [1, 2, 2, 3, 4, 5]
    observed = [True, True, False, True, False, True]
    assert kaplan_meier_median(times, observed) == 3.0


def test_kaplan_meier_median_without_censoring_is_the_lower_sample_median():
    assert kaplan_meier_median([4, 1, 3, 2], [True] * 4) == 2.0   # S(2) = 0.5 exactly
    assert kaplan_meier_median([5, 1, 3], [True] * 3) == 3.0


def test_kaplan_meier_median_not_reached_is_infinite_whatever_the_run_lengths():
    assert kaplan_meier_median([3, 7, 7], [False, False, False]) == np.inf   # all censored
    assert kaplan_meier_median([1, 9, 9, 9], [True, False, False, False]) == np.inf
    assert kaplan_meier_median([1, 250, 250, 250], [True, False, False, False]) == np.inf
    assert kaplan_meier_median([0, 0, 2], [False, False, True]) == 2.0  # censored at 0 (no window)
    assert np.isnan(kaplan_meier_median([], []))


def test_never_runs_stay_at_risk_while_censored_runs_leave():
    # 4 events at 8..11; 6 runs without the event at T=4. Never (stopped): share 0.4 at any
    # horizon >= 11. Censored (budget): KM moves their weight onto the 4 -> share 1.0.
    times = np.array([8, 9, 10, 11, 4, 4, 4, 4, 4, 4], dtype=float)
    events = np.array([True] * 4 + [False] * 6)
    never = np.where(events, times, np.inf)
    assert share_by(never, events, 32) == pytest.approx(0.4)
    assert share_by(times, events, 32) == pytest.approx(1.0)
    assert share_by(never, events, 9) == pytest.approx(0.2)


def test_permutation_pvalue_is_small_for_a_clear_effect():
    rng = np.random.default_rng(0)
    control = rng.normal(size=30)
    assert paired_permutation_pvalue(control + 1.0, control, resamples=999, seed=0) < 0.01


def test_permutation_pvalues_are_uniform_without_an_effect():
    rng = np.random.default_rng(1)
    pvalues = [paired_permutation_pvalue(rng.normal(size=10), rng.normal(size=10),
                                         resamples=2000, seed=i) for i in range(300)]
    # exact sign-flip test (2**10 <= resamples): valid, so about 5% below 0.05 and uniform
    assert np.mean(np.less_equal(pvalues, 0.05)) <= 0.09
    assert stats.kstest(pvalues, "uniform").pvalue > 0.001


def test_permutation_pvalue_degenerate_cases_give_no_evidence():
    assert paired_permutation_pvalue([], [], resamples=99, seed=0) == 1.0
    assert paired_permutation_pvalue([1.0], [0.0], resamples=99, seed=0) == 1.0
    assert paired_permutation_pvalue([1.0, 2.0], [1.0, 2.0], resamples=99, seed=0) == 1.0


def test_permutation_pvalue_matches_the_exact_enumeration():
    # differences 1, 2, 3: of the 8 sign patterns, |mean| >= 2 for (+++) and (---): p = 2/8
    assert paired_permutation_pvalue([1, 2, 3], [0, 0, 0], resamples=999, seed=0) == 0.25


def test_holm_matches_known_values():
    adjusted = adjust_pvalues([0.01, 0.04, 0.03, 0.005], "holm")
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_pvalues([0.5, 0.9], "holm").tolist() == [1.0, 1.0]


def test_benjamini_hochberg_and_yekutieli_match_known_values():
    pvalues = [0.01, 0.04, 0.03, 0.005]
    assert adjust_pvalues(pvalues, "bh").tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    harmonic = 1 + 1 / 2 + 1 / 3 + 1 / 4
    assert adjust_pvalues(pvalues, "by").tolist() == pytest.approx(
        np.minimum(1.0, np.array([0.02, 0.04, 0.04, 0.02]) * harmonic).tolist())
    assert adjust_pvalues([], "bh").size == 0
    with pytest.raises(ValueError, match="bonferroni"):
        adjust_pvalues([0.1], "bonferroni")


def test_bootstrap_mean_interval_covers_the_mean():
    values = np.random.default_rng(2).normal(loc=3.0, size=80)
    low, high = bootstrap_mean_interval(values, resamples=500, confidence_level=0.95, seed=0)
    standard_error = values.std(ddof=1) / np.sqrt(values.size)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * standard_error, rel=0.25)


def test_bootstrap_interval_degenerate_cases_collapse_to_the_point():
    assert bootstrap_mean_interval([2.0] * 10, 100, 0.95, 0) == (2.0, 2.0)
    assert bootstrap_mean_interval([4.0], 100, 0.95, 0) == (4.0, 4.0)
    low, high = bootstrap_mean_interval([0.0] * 19 + [1.0], 200, 0.95, 0)   # BCa degenerate
    assert np.isfinite(low) and np.isfinite(high) and low <= 0.05 <= high


def test_bootstrap_interval_of_a_custom_statistic_resamples_documents():
    times = np.array([1, 2, 2, 3, 4, 5, 6, 8], dtype=float)

    def median(indices):
        return kaplan_meier_median(times[indices], np.ones(indices.size, dtype=bool))

    low, high = bootstrap_interval(median, times.size, 300, 0.9, seed=1)
    assert 1 <= low <= 3 <= high <= 8


def test_log_rank_z_matches_scipy_on_censored_samples():
    from kvinject.metrics.survival import log_rank_z

    rng = np.random.default_rng(3)
    for _ in range(20):
        times = rng.integers(1, 12, size=30).astype(float)
        status = rng.choice(3, size=30, p=[0.6, 0.25, 0.15])   # event / censored / never
        group = rng.random(30) < 0.4
        if group.all() or not group.any():
            continue
        times[status == 2] = np.inf
        observed = status == 0
        samples = [stats.CensoredData(uncensored=times[observed & (group == g)],
                                      right=np.minimum(times[~observed & (group == g)], 1e9))
                   for g in (True, False)]
        assert log_rank_z(times, observed, group) == pytest.approx(stats.logrank(*samples).statistic)


def test_log_rank_z_is_vectorised_and_ignores_non_members():
    from kvinject.metrics.survival import log_rank_z

    times = np.array([1.0, 2.0, 3.0, 4.0, -np.inf])   # the last run is in no risk set
    observed = np.array([True, True, True, True, False])
    groups = np.array([[1, 1, 0, 0, 1], [0, 0, 1, 1, 0]], dtype=bool)
    z = log_rank_z(times, observed, groups)
    assert z[0] == pytest.approx(1.697749375, abs=1e-8)   # by hand (and R's survdiff): chi2 2.88
    assert z[1] == pytest.approx(-z[0])
    assert log_rank_z(times, np.zeros(5, bool), groups[0]) == 0.0   # no event: no evidence


def test_monte_carlo_permutation_pvalue_counts_the_observed_labelling():
    from kvinject.metrics.resampling import permutation_pvalue

    assert permutation_pvalue(3.0, [0.1, -0.2, 0.5]) == 0.25
    assert permutation_pvalue(0.0, [0.0, 1.0, -1.0]) == 1.0
    assert permutation_pvalue(-2.0, [2.0, 0.5, -3.0]) == 0.75


def _share_payloads(rng, runs, share, censoring, horizon):
    """Runs whose event falls within the horizon with probability `share` (uniform time), each
    cut by the budget before the horizon with probability `censoring` (uniform time)."""
    payloads = []
    for _ in range(runs):
        time = int(rng.integers(1, horizon + 1)) if rng.random() < share else None
        cut = int(rng.integers(1, horizon)) if rng.random() < censoring else None
        if cut is not None and (time is None or cut < time):
            run = {"time": cut, "status": "censored"}
        elif time is not None:
            run = {"time": time, "status": "event"}
        else:
            run = {"time": horizon + 5, "status": "censored"}   # budget hit after the horizon
        payloads.append({"run": run, "noise": run})
    return payloads


@pytest.mark.parametrize("runs", [4, 8, 20])
@pytest.mark.parametrize("share", [0.3, 0.9])
@pytest.mark.parametrize("censoring", [0.0, 0.4])
def test_share_interval_covers_the_true_share_at_small_n(runs, share, censoring):
    """Nominal 95% at 4, 8 and 20 runs, with and without runs censored before H. 400
    replications each: coverage at least 0.95 - 3 simulation standard errors. (The percentile
    bootstrap it replaces covered 0.9 at 4 runs 34% of the time: 4 of 4 adapted gave [1, 1].)"""
    from kvinject.metrics import AdaptationSettings, metric_aggregation

    horizon, replications = 16, 400
    settings = AdaptationSettings(horizon_tokens=horizon, report="full")
    low = metric_aggregation("adaptation_point_share_ci_low@5", settings)
    high = metric_aggregation("adaptation_point_share_ci_high@5", settings)
    rng = np.random.default_rng(runs * 100 + int(share * 10) + int(censoring * 10))
    covered = 0
    for _ in range(replications):
        payloads = _share_payloads(rng, runs, share, censoring, horizon)
        covered += low(payloads) <= share <= high(payloads)
    assert covered / replications >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / replications), covered


def test_share_interval_claims_no_certainty_from_four_observed_runs():
    """4 runs adapted, 6 cut by the budget before they could: Kaplan-Meier says 1.0 (every run
    still followed adapted), the percentile bootstrap said [1, 1]; the interval is wide."""
    from kvinject.metrics import AdaptationSettings, metric_aggregation

    settings = AdaptationSettings(horizon_tokens=16, report="full")
    payloads = ([{"run": {"time": 8 + i, "status": "event"}} for i in range(4)]
                + [{"run": {"time": 4, "status": "censored"}}] * 6)
    assert metric_aggregation("adaptation_point_share@5", settings)(payloads) == 1.0
    low = metric_aggregation("adaptation_point_share_ci_low@5", settings)(payloads)
    assert low < 0.2 and metric_aggregation("adaptation_point_share_ci_high@5", settings)(payloads) == 1.0
    # the low end is Clopper-Pearson's for 4 of 10
    assert low == pytest.approx(stats.beta.ppf(0.025, 4, 7))


def test_censored_binomial_interval_reduces_to_clopper_pearson():
    from kvinject.metrics.resampling import censored_binomial_interval

    exact = stats.binomtest(7, 20).proportion_ci(0.95, method="exact")
    assert censored_binomial_interval(7, 0, 20, 0.95) == pytest.approx((exact.low, exact.high))
    assert censored_binomial_interval(0, 0, 5, 0.95)[0] == 0.0
    assert censored_binomial_interval(3, 2, 5, 0.95)[1] == 1.0
    assert all(math.isnan(end) for end in censored_binomial_interval(0, 0, 0, 0.95))
