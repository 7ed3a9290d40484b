"""Paired comparison statistics (metrics/paired.py): interval coverage and test level by simulation."""
import numpy as np
import pytest

from kvinject.metrics import keys as K
from kvinject.metrics.paired import (
    MIN_INTERVAL_DISCORDANT,
    MIN_INTERVAL_DOCS,
    headline_names,
    is_run_level,
    paired_difference,
    per_doc_values,
)
from kvinject.metrics.settings import AdaptationSettings

REPLICATIONS = 300


def _differences(shape: str, n: int, rng) -> tuple[np.ndarray, np.ndarray, float]:
    """(a, b, true mean of b - a) for three shapes of per-doc differences: symmetric continuous,
    skewed continuous, and the -1/0/1 differences of two paired accuracies."""
    if shape == "normal":
        a = rng.normal(size=n)
        return a, a + rng.normal(0.3, 1.0, n), 0.3
    if shape == "skewed":
        a = rng.normal(size=n)
        return a, a + rng.exponential(1.0, n) - 0.8, 0.2
    a = rng.random(n) < 0.5
    flip = rng.choice([-1, 0, 1], size=n, p=[0.15, 0.6, 0.25])   # b = a moved by the flip, kept in {0, 1}
    b = np.where(flip == 1, True, np.where(flip == -1, False, a))
    truth = 0.5 * 0.25 - 0.5 * 0.15          # P(a=0, flip=1) - P(a=1, flip=-1)
    return a.astype(float), b.astype(float), truth


def _coverage(shape: str, n: int) -> tuple[float, int]:
    """Share of the reported intervals that cover the truth, and how many were reported."""
    rng = np.random.default_rng(n)
    covered = reported = 0
    for replication in range(REPLICATIONS):
        a, b, truth = _differences(shape, n, rng)
        result = paired_difference(a, b, resamples=1000, permutation_resamples=200, seed=replication)
        if not np.isnan(result.ci_low):
            reported += 1
            covered += result.ci_low - 1e-12 <= truth <= result.ci_high + 1e-12
    return covered / max(reported, 1), reported


# (shape, n, lowest acceptable coverage): the measured coverage (metrics/README.md) minus about
# three simulation standard errors (0.013 at 95% over 300 replications). Strongly skewed
# differences (exponential) stay near 0.91 at these n, as the README says.
@pytest.mark.parametrize("shape, n, lowest", [
    ("normal", MIN_INTERVAL_DOCS, 0.91), ("normal", 40, 0.91), ("skewed", MIN_INTERVAL_DOCS, 0.86),
    ("skewed", 40, 0.86), ("accuracies", 20, 0.90), ("accuracies", 40, 0.91)])
def test_interval_coverage_is_near_nominal_where_an_interval_is_reported(shape, n, lowest):
    coverage, reported = _coverage(shape, n)
    assert reported >= 100, f"only {reported} of {REPLICATIONS} replications had an interval"
    assert lowest <= coverage <= 0.995


def test_no_interval_when_few_docs_differ():
    a = np.zeros(50)
    b = a.copy()
    b[:MIN_INTERVAL_DISCORDANT - 1] = 1.0
    result = paired_difference(a, b)
    assert np.isnan(result.ci_low) and result.n_nonzero == MIN_INTERVAL_DISCORDANT - 1
    b[MIN_INTERVAL_DISCORDANT - 1] = 1.0
    assert not np.isnan(paired_difference(a, b).ci_low)


@pytest.mark.parametrize("n", [1, 2, 3, MIN_INTERVAL_DOCS - 1])
def test_no_interval_below_the_minimum_number_of_docs(n):
    rng = np.random.default_rng(n)
    result = paired_difference(rng.normal(size=n), rng.normal(size=n) + 1)
    assert result.n_pairs == n and np.isnan(result.ci_low) and np.isnan(result.ci_high)
    assert 0 < result.pvalue <= 1


@pytest.mark.parametrize("n", [3, 5, 10, 40])
def test_sign_flip_test_rejects_a_true_null_at_most_five_percent_at_any_n(n):
    rng = np.random.default_rng(100 + n)
    rejected = []
    for replication in range(REPLICATIONS):
        a = rng.normal(size=n)
        b = a + rng.standard_t(3, size=n)   # symmetric, heavy-tailed differences with mean 0
        rejected.append(paired_difference(a, b, resamples=200, permutation_resamples=2000,
                                          seed=replication).pvalue <= 0.05)
    rate = np.mean(rejected)
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / REPLICATIONS)
    if n >= 10:   # from n = 5 on the exact test can reach 0.05; at 40 it is near its level, not vacuous
        assert rate >= 0.01


def test_a_known_shift_is_estimated_covered_and_found():
    rng = np.random.default_rng(7)
    a = rng.normal(size=60)
    b = a + 0.5 + rng.normal(0, 0.5, 60)
    result = paired_difference(a, b)
    assert result.difference == pytest.approx(np.mean(b - a))
    assert result.ci_low < 0.5 < result.ci_high and result.ci_low > 0
    assert result.pvalue < 0.001 and result.n_pairs == 60 and result.n_nonzero == 60


def test_identical_values_give_no_evidence_and_no_interval():
    values = np.linspace(0, 1, 20)
    result = paired_difference(values, values)
    assert (result.difference, result.pvalue, result.n_nonzero) == (0, 1.0, 0) and np.isnan(result.ci_low)


def test_bad_pairs_are_refused():
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1.0, float("nan")], [1.0, 2.0])


def test_headline_names_are_the_catalogue_headline_set():
    names = headline_names()
    assert set(names) == set(K.HEADLINE) and len(names) == len(K.HEADLINE)
    assert {name for name in names if is_run_level(name)} == {"n_docs", "detection_calibrated", "kl_noise_floor"}


def test_per_doc_values_of_each_kind():
    settings = AdaptationSettings()
    assert per_doc_values("injection_accuracy@5", {"x": 1.0, "y": 0.0}, settings) == {"x": 1.0, "y": 0.0}
    horizon = settings.horizon_tokens
    events = {"early": {"run": {"time": 2, "status": "event"}},
              "late": {"run": {"time": horizon + 1, "status": "event"}},
              "cut": {"run": {"time": 1, "status": "censored"}},   # censored before H: unknown, left out
              "stopped": {"run": {"time": 3, "status": "never"}}}
    assert per_doc_values("adaptation_point_share@5", events, settings) == {"early": 1.0, "late": 0.0, "stopped": 0.0}
    with pytest.raises(ValueError, match="run-level"):
        per_doc_values("n_docs@5", {"x": 1.0}, settings)
