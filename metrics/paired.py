"""Paired comparison of two conditions on the same documents (``kvinject compare``).

Two runs (or two injection points of one run) give each shared document one value of a measure
each; the comparison is over the per-document differences d = b - a:
    estimand   E[b - a], the mean paired difference over documents (B - A);
    interval   expanded percentile bootstrap over documents (resampling.expanded_percentile_interval),
               reported only from MIN_INTERVAL_DOCS pairs, MIN_INTERVAL_DISCORDANT of them differing
               (simulated coverage in metrics/README.md);
    test       two-sided sign-flip permutation test of "a and b are exchangeable within each
               document" (resampling.paired_permutation_pvalue), exact when 2^n <= resamples.
`per_doc_values` turns a headline key's logged per-doc values (lm-eval --log_samples) into the
per-document numbers compared; run-level keys (counts, the calibration flag) have none.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import keys as K
from .aggregations import detection_outcome, metric_aggregation
from .per_doc import _within as within_horizon
from .resampling import expanded_percentile_interval, paired_permutation_pvalue
from .settings import AdaptationSettings

# No interval is given below this many pairs, or below this many pairs whose values differ: a
# bootstrap interval cannot reach its coverage from a handful of documents, nor from a handful of
# discordant ones among concordant accuracies (simulated in tests/metrics/test_metrics_paired.py, measured
# coverage in metrics/README.md).
MIN_INTERVAL_DOCS = 10
MIN_INTERVAL_DISCORDANT = 5
NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """mean_a, mean_b: the means over the paired docs; difference = mean_b - mean_a; ci_low,
    ci_high: its interval (NaN below MIN_INTERVAL_DOCS pairs or MIN_INTERVAL_DISCORDANT
    differing pairs); pvalue: the sign-flip test;
    n_pairs: paired docs; n_nonzero: docs whose two values differ (the test's information)."""

    n_pairs: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    pvalue: float
    n_nonzero: int


def paired_difference(a, b, resamples: int = 2000, permutation_resamples: int = 9999,
                      confidence_level: float = 0.95, seed: int = 0) -> PairedDifference:
    """Mean paired difference b - a over documents, its bootstrap interval and sign-flip p-value.

    a, b: per-document values in the same document order (finite floats). No pair: NaN values
    and p-value 1.0.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two 1-D arrays of one length, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("paired values must be finite (drop the documents without a value first)")
    if a.size == 0:
        return PairedDifference(0, NAN, NAN, NAN, NAN, NAN, 1.0, 0)
    differences = b - a
    n_nonzero = int(np.count_nonzero(differences))
    low, high = (expanded_percentile_interval(differences, resamples, confidence_level, seed)
                 if a.size >= MIN_INTERVAL_DOCS and n_nonzero >= MIN_INTERVAL_DISCORDANT else (NAN, NAN))
    return PairedDifference(
        n_pairs=int(a.size), mean_a=float(a.mean()), mean_b=float(b.mean()),
        difference=float(differences.mean()), ci_low=low, ci_high=high,
        pvalue=paired_permutation_pvalue(b, a, permutation_resamples, seed), n_nonzero=n_nonzero)


def headline_names() -> list[str]:
    """keys.HEADLINE in catalogue order (the order of keys.METRICS)."""
    order = {metric: index for index, metric in enumerate(K.METRICS)}
    return sorted(K.HEADLINE, key=lambda name: (order[_parse_name(name).metric], name))


def _parse_name(name: str) -> K.ParsedKey:
    """A key, or a headline name (a key without @N) with a stand-in point for per-point metrics."""
    try:
        return K.parse_key(name)
    except ValueError:
        return K.parse_key(f"{name}@1")


def headline_key(name: str, point: int | None = None) -> str:
    """The result key of a headline name at an injection point (no point for per-run metrics)."""
    parsed = _parse_name(name)
    return K.format_key(parsed.metric, point if parsed.spec.per_injection_point else None, parsed.stat)


def is_per_point(name: str) -> bool:
    """Whether the headline name or key has one value per injection point (``@N``)."""
    return _parse_name(name).spec.per_injection_point


def is_run_level(name: str) -> bool:
    """Counts, maxima (kl_noise_floor) and the calibration flag describe a run, not a document: no
    per-doc difference. name: a headline name or a key."""
    parsed = _parse_name(name)
    return parsed.spec.kind in (K.COUNT, K.MAXIMUM) or parsed.metric == "detection_calibrated"


def per_doc_values(key: str, logged: dict, settings: AdaptationSettings) -> dict:
    """{doc: float} compared for a headline key, from {doc: logged per-doc value} of one run.

    MEAN keys: the value itself. Time-to-event shares: 1.0 / 0.0 the injection run's event within
    horizon_tokens, documents censored before it left out (per_doc._within, as the paired tests);
    vs_noise: that minus the noise run's (-1.0 / 0.0 / 1.0).
    detection_rate: the alarm (1.0 / 0.0) of the run's own calibrated detector on each changed
    document (calibrated on every logged document of the run, as its aggregation), undecided
    documents left out. Run-level keys: ValueError.
    """
    parsed = K.parse_key(key)
    kind = parsed.spec.kind
    if is_run_level(key):
        raise ValueError(f"{key} is a run-level value, not a per-document one")
    if kind == K.MEAN:
        return {doc: float(value) for doc, value in logged.items()}
    if kind == K.TIME_TO_EVENT:
        found = {doc: _event_within(value, parsed.stat, settings.horizon_tokens) for doc, value in logged.items()}
        return {doc: value for doc, value in found.items() if value is not None}
    if kind == K.DETECTION and parsed.metric == "detection_rate":
        docs = list(logged)
        outcome = detection_outcome([logged[doc] for doc in docs], settings)
        return {doc: float(alarm) for doc, alarm, control in zip(docs, outcome.alarm, outcome.control)
                if not control and not math.isnan(alarm)}
    raise ValueError(f"{key}: no per-document comparison is defined for {kind} metrics")


def _event_within(value: dict, stat: str, horizon: int) -> float | None:
    """A doc's time-to-event value: the run's event within H (1.0 / 0.0) or, for vs_noise, that minus
    its noise run's (-1.0, 0.0, 1.0); None when a run it needs was censored before H."""
    run = within_horizon(value["run"], horizon)
    if stat != "vs_noise" or run is None:
        return run
    noise = within_horizon(value["noise"], horizon)
    return None if noise is None else run - noise


def run_level_value(key: str, logged: dict, settings: AdaptationSettings) -> float:
    """A run-level headline key over the given documents: the key's own aggregation."""
    return float(metric_aggregation(key, settings)(list(logged.values())))
