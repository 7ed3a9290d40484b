"""metric_aggregation: the cross-doc aggregation of every result key.

lm-eval calls each key's aggregation with the list of that key's per-doc values only, so a key
that needs all documents (calibration, Kaplan-Meier, bootstrap, corrected tests) receives per-doc
payloads, and work shared by several keys (the calibration behind detection_latency@N,
detection_rate@N, ...; the test family behind every pvalue_*@N; the bootstrap behind _ci_low and
_ci_high) is cached by the content of the list, so it runs once per run.

Zero usable documents: a median, rate or interval over no document is NaN, a censored count 0, a
p-value with fewer than two pairs 1.0 (no evidence). lm-eval never aggregates an empty list (a key
exists only when some doc emitted it), and every doc that emits a key is usable for it, so a run
with real docs reports no NaN.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json

import numpy as np

from . import keys as K
from .detection import Calibration, calibrate, detection_time
from .harness import lm_eval_mean
from .resampling import (
    adjust_pvalues,
    bootstrap_interval,
    bootstrap_mean_interval,
    paired_permutation_pvalue,
)
from .settings import AdaptationSettings
from .survival import kaplan_meier_median

NAN = float("nan")
_CACHE_SIZE = 128


def metric_aggregation(key: str, settings: AdaptationSettings | None = None):
    """The aggregation of a result key: callable(list of per-doc values) -> float."""
    settings = settings or AdaptationSettings()
    parsed = K.parse_key(key)
    if parsed.derived == K.PVALUE:
        own = K.format_key(parsed.metric, parsed.injection_point)
        return functools.partial(corrected_pvalue, own, settings=settings)
    kind = parsed.spec.kind
    if parsed.layer is not None or (kind == K.MEAN and parsed.derived is None):
        # lm-eval adds a standard error only when the aggregation *is* its own `mean`.
        return lm_eval_mean()
    if kind == K.MEAN:
        return functools.partial(mean_interval_end, parsed.derived, settings=settings)
    if kind == K.TIME_TO_EVENT:
        return functools.partial(time_to_event_summary, parsed.derived, settings=settings)
    return functools.partial(
        detection_summary, parsed.spec.detection_summary, parsed.derived, settings=settings)


def cached_on_content(function):
    """Memoise function(values, settings) on a digest of the values' JSON text.

    Several keys aggregate the same per-doc values (a metric and its _ci_low/_ci_high; every
    detection key of N; every p-value key), so the expensive part runs once per content. Keyed
    on a digest so the cache does not hold the (possibly large) payloads themselves.
    """
    cache: collections.OrderedDict = collections.OrderedDict()

    @functools.wraps(function)
    def cached(values, settings):
        text = json.dumps(list(values), sort_keys=True)
        key = (hashlib.sha256(text.encode()).hexdigest(), settings)
        if key in cache:
            cache.move_to_end(key)
        else:
            cache[key] = function(values, settings)
            if len(cache) > _CACHE_SIZE:
                cache.popitem(last=False)
        return cache[key]

    cached.cache = cache
    return cached


def _interval_end(interval: tuple[float, float], derived: str) -> float:
    return interval[0] if derived == K.CI_LOW else interval[1]


# ---- means ------------------------------------------------------------------------------------

def mean_interval_end(derived: str, values, settings: AdaptationSettings) -> float:
    """Bootstrap interval end (CI_LOW / CI_HIGH) of the mean of per-doc floats; NaN if empty."""
    return _interval_end(_mean_interval(values, settings), derived)


@cached_on_content
def _mean_interval(values, settings: AdaptationSettings) -> tuple[float, float]:
    if not values:
        return NAN, NAN
    return bootstrap_mean_interval(
        values, settings.bootstrap_resamples, settings.confidence_level, settings.seed)


# ---- times to an event ------------------------------------------------------------------------

def _unpack_events(events) -> tuple[np.ndarray, np.ndarray]:
    times = np.array([event["time"] for event in events], dtype=float)
    observed = np.array([event["observed"] for event in events], dtype=bool)
    return times, observed


def time_to_event_summary(derived: str | None, values, settings: AdaptationSettings) -> float:
    """Aggregation of per-doc {"time", "observed"} values: Kaplan-Meier median (tokens, derived
    None), censored count (CENSORED) or bootstrap interval end of the median; NaN if empty."""
    times, observed = _unpack_events(values)
    if derived == K.CENSORED:
        return float(np.sum(~observed))
    if derived is None:
        return kaplan_meier_median(times, observed)
    return _interval_end(_median_interval(values, settings), derived)


@cached_on_content
def _median_interval(values, settings: AdaptationSettings) -> tuple[float, float]:
    times, observed = _unpack_events(values)
    if not times.size:
        return NAN, NAN

    def median_of(indices):
        return kaplan_meier_median(times[indices], observed[indices])

    return bootstrap_interval(median_of, times.size, settings.bootstrap_resamples,
                              settings.confidence_level, settings.seed)


# ---- calibrated detection ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DetectionOutcome:
    """The calibrated detector and the detection time of every injection run."""

    calibration: Calibration
    events: tuple[dict, ...]   # {"time", "observed"} per injection run, in doc order


@cached_on_content
def detection_outcome(payloads, settings: AdaptationSettings) -> DetectionOutcome:
    """Calibrate on the noise runs of the per-doc detection payloads, then detect on their
    injection runs."""
    calibration = calibrate([payload["noise"] for payload in payloads], settings.false_alarm_rate,
                            settings.cusum_drift)
    return DetectionOutcome(
        calibration, tuple(detection_time(payload["run"], calibration) for payload in payloads))


def detection_summary(summary: str, derived: str | None, values,
                      settings: AdaptationSettings) -> float:
    """Aggregation of per-doc detection payloads {"run": [x_t], "noise": [x_t]}.

    summary "latency": the detection times (see time_to_event_summary); "rate": the share of
    injection runs with an alarm. The bootstrap intervals hold the calibration fixed at its
    full-sample value.
    """
    if not values:
        return 0.0 if derived == K.CENSORED else NAN
    events = detection_outcome(values, settings).events
    if summary == "latency":
        return time_to_event_summary(derived, events, settings)
    alarms = [float(event["observed"]) for event in events]
    if derived is None:
        return float(np.mean(alarms))
    return mean_interval_end(derived, alarms, settings)


# ---- paired tests, corrected across the family ------------------------------------------------

def corrected_pvalue(own_key: str, values, settings: AdaptationSettings) -> float:
    """Corrected p-value of `own_key` (e.g. "oracle_convergence@5") in the test family.

    values: per-doc {"<metric>@<N>": [injection value, noise value]}. Every (metric, N) with at
    least two pairs is a test (sign-flip permutation, two-sided); settings.correction adjusts the
    family. With fewer pairs there is no test: 1.0, not counted in the family.
    """
    return _family_pvalues(values, settings).get(own_key, 1.0)


@cached_on_content
def _family_pvalues(values, settings: AdaptationSettings) -> dict[str, float]:
    pairs: dict[str, list] = {}
    for doc_pairs in values:
        for key, pair in doc_pairs.items():
            pairs.setdefault(key, []).append(pair)
    family = sorted(key for key, key_pairs in pairs.items() if len(key_pairs) >= 2)
    raw = [
        paired_permutation_pvalue(*np.asarray(pairs[key], dtype=float).T,
                                  resamples=settings.permutation_resamples, seed=settings.seed)
        for key in family
    ]
    return dict(zip(family, adjust_pvalues(raw, settings.correction).tolist()))
