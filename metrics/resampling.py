"""Problem-level resampling statistics: bootstrap intervals, paired sign-flip tests, corrections.

Units of resampling are documents (problems), never tokens: tokens within a run are
autocorrelated, problems are independent.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats


def bootstrap_interval(
    statistic: Callable[..., float], n_items: int, resamples: int, confidence_level: float,
    seed: int,
) -> tuple[float, float]:
    """Bootstrap confidence interval of statistic(indices) over `n_items` resampled items.

    statistic receives an integer index array (and `axis`, if it accepts one, for a vectorised
    call). BCa first; when BCa is degenerate (e.g. a near-constant bootstrap distribution) the
    percentile interval; when the distribution is constant, or there are fewer than two items,
    the point estimate for both ends.
    """
    indices = np.arange(n_items)
    point = float(statistic(indices))
    if n_items < 2:
        return point, point
    with warnings.catch_warnings():
        # A degenerate BCa (its acceleration is 0/0 when the jackknife values are all equal)
        # warns and returns NaN; that case is handled below by the percentile fallback.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(
            (indices,), statistic, n_resamples=resamples, confidence_level=confidence_level,
            method="BCa", rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        tail = (1 - confidence_level) / 2
        low, high = np.quantile(result.bootstrap_distribution, [tail, 1 - tail])
    if not (np.isfinite(low) and np.isfinite(high)):
        return point, point
    return float(low), float(high)


def percentile_interval(replicates, confidence_level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates dropped; NaN if none left)."""
    replicates = np.asarray(replicates, dtype=float)
    replicates = replicates[~np.isnan(replicates)]
    if not replicates.size:
        return float("nan"), float("nan")
    tail = (1 - confidence_level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def censored_binomial_interval(known: int, unknown: int, total: int,
                               confidence_level: float) -> tuple[float, float]:
    """Two-sided interval for a share from `total` independent runs of which `known` had the
    event and `unknown` ended (censored) before it could be seen.

    Whatever the unknown runs would have done, the true count lies in [known, known + unknown];
    the Clopper-Pearson low end of `known` and high end of `known + unknown` therefore cover the
    share with probability >= confidence_level (each CP end errs with probability <= the tail).
    It reduces to Clopper-Pearson without censoring and never claims certainty from a few runs.
    NaN for no run.
    """
    if total == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence_level) / 2
    high_count = known + unknown
    low = stats.beta.ppf(tail, known, total - known + 1) if known > 0 else 0.0
    high = (stats.beta.ppf(1 - tail, high_count + 1, total - high_count)
            if high_count < total else 1.0)
    return float(low), float(high)


def _mean_over(values: np.ndarray) -> Callable[..., float]:
    def statistic(indices, axis=-1):
        return values[indices].mean(axis=axis)

    return statistic


def bootstrap_mean_interval(values, resamples: int, confidence_level: float, seed: int):
    """Bootstrap confidence interval of the mean of per-document values (vectorised)."""
    values = np.asarray(values, dtype=float)
    return bootstrap_interval(_mean_over(values), values.size, resamples, confidence_level, seed)


def _mean_statistic(sample, axis=-1):
    return np.mean(sample, axis=axis)


def paired_permutation_pvalue(treated, control, resamples: int, seed: int) -> float:
    """Two-sided sign-flip permutation p-value of mean(treated - control) = 0, in (0, 1].

    The pairs are documents (injection run vs noise run of the same problem). Exact when
    2**n_pairs <= resamples. All differences zero: 1.0 (no evidence). Fewer than two pairs: 1.0
    here, but the aggregations never form such a test (the key is left out).
    """
    differences = np.asarray(treated, dtype=float) - np.asarray(control, dtype=float)
    if differences.size < 2 or not np.any(differences):
        return 1.0
    result = stats.permutation_test(
        (differences,), _mean_statistic,
        permutation_type="samples", n_resamples=resamples, alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(min(result.pvalue, 1.0))


def permutation_pvalue(statistic: float, replicates) -> float:
    """Two-sided Monte Carlo permutation p-value (1 + #{|replicate| >= |statistic|}) / (1 + B),
    in (0, 1]: valid at any sample size because the observed labelling is one of the B + 1."""
    replicates = np.abs(np.asarray(replicates, dtype=float))
    # A tolerance so that a replicate equal to the statistic up to rounding counts as as extreme.
    extreme = np.sum(replicates >= abs(statistic) - 1e-9 * max(1.0, abs(statistic)))
    return float((1 + extreme) / (1 + replicates.size))


def adjust_pvalues(pvalues, method: str) -> np.ndarray:
    """Multiplicity-adjusted p-values, same order: "holm", "bh" or "by" (see AdaptationSettings)."""
    pvalues = np.asarray(pvalues, dtype=float)
    if pvalues.size == 0:
        return pvalues
    if method in ("bh", "by"):
        return stats.false_discovery_control(pvalues, method=method)
    if method != "holm":
        raise ValueError(f"unknown correction {method!r}; use 'holm', 'bh' or 'by'")
    # Holm step-down: the i-th smallest p-value is multiplied by (m - i), then made monotone.
    # scipy has no Holm, so it is written out here.
    order = np.argsort(pvalues)
    m = pvalues.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * pvalues[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def expanded_percentile_interval(values, resamples: int, confidence_level: float,
                                 seed: int) -> tuple[float, float]:
    """Expanded percentile bootstrap interval of the mean of per-document values.

    The percentile interval at tail a' = Phi(-sqrt(n / (n - 1)) * t_{n-1, 1 - alpha/2}) instead of
    alpha/2 (Hesterberg 2015, "What teachers should know about the bootstrap"): the plain
    percentile and BCa intervals are too narrow for small n (they behave like z-intervals with
    the 1/n variance), the expansion makes them about as wide as Student's t. NaN for fewer than
    two values.
    """
    values = np.asarray(values, dtype=float)
    n = values.size
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    replicates = values[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = 1 - confidence_level
    tail = stats.norm.cdf(-np.sqrt(n / (n - 1)) * stats.t.ppf(1 - alpha / 2, n - 1))
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)
