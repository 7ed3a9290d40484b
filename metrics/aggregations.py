"""metric_aggregation: the cross-doc aggregation of every result key.

lm-eval calls each key's aggregation with the list of that key's per-doc values only, so a key
that needs all documents (calibration, Kaplan-Meier, bootstrap, corrected tests) receives per-doc
payloads, and work shared by several keys (the detector behind every detection key of N; the
test family behind every pvalue_*@N; the bootstrap behind _ci_low and _ci_high) is cached by the
content of the list, so it runs once per run.

Zero usable documents: a share, median, rate or interval over no document is NaN (e.g.
control_false_positive_rate@N of a run without identical controls), a count 0. lm-eval never
aggregates an empty list (a key exists only when some doc emitted it). Every aggregation but
lm-eval's own `mean` returns its non-finite results as the named values of values.py ("not
estimable", "not reached", "no test").
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging

import numpy as np
from scipy import stats

from . import keys as K
from .detection import detect, padded
from .events import CENSORED, EVENT, NEVER, event
from .resampling import (
    adjust_pvalues,
    bootstrap_mean_interval,
    censored_binomial_interval,
    paired_permutation_pvalue,
    percentile_interval,
    permutation_pvalue,
)
from .settings import AdaptationSettings
from .survival import (
    counts,
    kaplan_meier_median,
    kaplan_meier_median_interval,
    log_rank_z,
    share_by,
    share_estimable,
    unpack,
)
from .values import NO_TEST, readable

logger = logging.getLogger(__name__)

NAN = float("nan")
_CACHE_SIZE = 128
# Bootstrap replicates of the detector are computed in chunks of about this many floats.
_CHUNK_FLOATS = 4_000_000


def _plain_mean(values) -> float:
    return sum(values) / len(values)


def lm_eval_mean():
    """lm-eval's registered `mean` aggregation when lm_eval is installed, else the same formula.

    It must be lm-eval's own function object: lm-eval computes a standard error only for
    aggregations it recognises by identity (`stderr_for_metric`). Imported lazily so that the
    metrics import without lm_eval.
    """
    try:
        from lm_eval.api.metrics import mean
    except ImportError:
        return _plain_mean
    return mean


def metric_aggregation(key: str, settings: AdaptationSettings | None = None):
    """The aggregation of a result key: callable(list of per-doc values) -> float."""
    settings = settings or AdaptationSettings()
    parsed = K.parse_key(key)
    if parsed.spec.kind == K.MEAN and (parsed.layer is not None or parsed.stat == ""):
        # lm-eval adds a standard error only when the aggregation *is* its own `mean`.
        return lm_eval_mean()
    return _readable_result(_aggregation(parsed, settings))


def _aggregation(parsed: K.ParsedKey, settings: AdaptationSettings):
    if parsed.stat == K.PVALUE:
        own = K.format_key(parsed.metric, parsed.injection_point)
        return functools.partial(corrected_pvalue, own, settings=settings)
    kind = parsed.spec.kind
    if kind == K.MEAN:
        return functools.partial(mean_interval_end, parsed.stat, settings=settings)
    if kind == K.COUNT:
        return _count
    if kind == K.MAXIMUM:
        return functools.partial(noise_floor, settings=settings)
    if kind == K.TIME_TO_EVENT:
        return functools.partial(time_to_event_summary, parsed.stat, settings=settings)
    if kind == K.CONTROL_TEST:
        return functools.partial(adapted_vs_controls_pvalue, settings=settings)
    return functools.partial(detection_summary, parsed.metric, parsed.stat, settings=settings)


def _readable_result(aggregation):
    """The aggregation with a non-finite result returned as a named value (values.py)."""

    @functools.wraps(aggregation)
    def aggregate(values):
        return readable(aggregation(values))

    return aggregate


def _median_reached(median: float) -> float:
    """1.0: the KM median was reached; 0.0: not reached (median inf); NaN: no data."""
    return median if np.isnan(median) else float(np.isfinite(median))


def _count(values) -> float:
    return float(len(values))


def noise_floor(values, settings: AdaptationSettings) -> float:
    """kl_noise_floor: the largest per-control KL-gap bound; a floor that reaches the adapted rule's
    minimum gap means rounding alone can pass that rule, so the run's adaptation keys are noise there."""
    if not len(values):
        return NAN
    floor = float(max(values))
    if floor >= settings.adapted_min_kl_gap:
        logger.warning(
            "kl_noise_floor %.3g nats >= adapted_min_kl_gap %.3g: identical contexts differ by rounding as much "
            "as the adapted rule's minimum effect; set metadata adaptation.adapted_min_kl_gap above the floor "
            "(metrics/README.md, Precision)", floor, settings.adapted_min_kl_gap)
    return floor


def cached_on_content(function):
    """Memoise function(values, settings) on a digest of the values' JSON text.

    Several keys aggregate the same per-doc values (a metric and its intervals; every detection
    key of N; every p-value key), so the expensive part runs once per content. Keyed on a digest
    so the cache does not hold the (possibly large) payloads themselves.
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


def _interval_end(interval: tuple[float, float], stat: str) -> float:
    return interval[0] if stat.endswith(K.CI_LOW) else interval[1]


# ---- means ------------------------------------------------------------------------------------

def mean_interval_end(stat: str, values, settings: AdaptationSettings) -> float:
    """Bootstrap interval end (ci_low / ci_high) of the mean of per-doc floats; NaN if empty."""
    return _interval_end(_mean_interval(values, settings), stat)


@cached_on_content
def _mean_interval(values, settings: AdaptationSettings) -> tuple[float, float]:
    """BCa bootstrap interval of the mean; for 0/1 values (the accuracies) widened to contain the
    Clopper-Pearson interval: from all-0 or all-1 values every resample repeats the mean and the
    bootstrap alone claims certainty ([0, 0] from 0 correct answers in 74)."""
    if not values:
        return NAN, NAN
    low, high = bootstrap_mean_interval(
        values, settings.bootstrap_resamples, settings.confidence_level, settings.seed)
    array = np.asarray(values, dtype=float)
    if np.isin(array, (0.0, 1.0)).all():
        exact_low, exact_high = censored_binomial_interval(int(array.sum()), 0, array.size, settings.confidence_level)
        low, high = float(np.fmin(low, exact_low)), float(np.fmax(high, exact_high))
    return low, high


# ---- times to an event ------------------------------------------------------------------------

def time_to_event_summary(stat: str, values, settings: AdaptationSettings) -> float:
    """Aggregation of per-doc {"run": event, "noise": event} (events.py).

    share: Kaplan-Meier share of injection runs with the event within horizon_tokens (NaN, not
    estimable, when runs are censored before H and none is followed to H);
    share_ci_low/high: censoring-bounded Clopper-Pearson interval (_share_interval);
    median: KM median (inf: not reached); median_ci_low/high: its Brookmeyer-Crowley interval
    (survival.kaplan_meier_median_interval); median_reached: 1 / 0; censored / never: run counts;
    vs_noise: share of the injection runs - of the noise runs.
    """
    runs = [value["run"] for value in values]
    if stat in ("censored", "never"):
        return float(counts(runs)[CENSORED if stat == "censored" else NEVER])
    if stat == "median":
        return kaplan_meier_median(*unpack(runs))
    if stat in ("median_ci_low", "median_ci_high"):
        return _interval_end(kaplan_meier_median_interval(*unpack(runs), settings.confidence_level), stat)
    if stat == "median_reached":
        return _median_reached(kaplan_meier_median(*unpack(runs)))
    if stat == "share":
        return _share(runs, settings.horizon_tokens)
    if stat == "vs_noise":
        noise = [value["noise"] for value in values]
        return _share(runs, settings.horizon_tokens) - _share(noise, settings.horizon_tokens)
    return _interval_end(_share_interval(runs, settings), stat)


def _share(events, horizon: int) -> float:
    """KM share within the horizon; NaN where the budget hides it (survival.share_estimable)."""
    return share_by(*unpack(events), horizon) if share_estimable(events, horizon) else NAN


def _share_interval(events, settings: AdaptationSettings) -> tuple[float, float]:
    """Clopper-Pearson bounds widened over the unknown outcomes of runs censored before H:
    the low end from the runs known to have the event within H, the high end counting every
    such censored run as an event (resampling.censored_binomial_interval)."""
    horizon = settings.horizon_tokens
    known = sum(e["status"] == EVENT and e["time"] <= horizon for e in events)
    unknown = sum(e["status"] == CENSORED and e["time"] < horizon for e in events)
    return censored_binomial_interval(known, unknown, len(events), settings.confidence_level)


# ---- calibrated detection ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DetectionOutcome:
    """The calibrated detector's decisions on every doc's injection run (doc order)."""

    alarm: np.ndarray      # 1 / 0 / NaN undecided
    time: np.ndarray
    bound: np.ndarray
    horizon: int           # H*, the evaluated length of a run that reaches it
    control: np.ndarray    # bool: identical-problem control
    events: tuple          # {"time", "status"} of the decided changed-problem runs
    times: np.ndarray      # alarm_times of every doc's injection run (-inf: undecided)
    observed: np.ndarray


def _matrices(payloads, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    return (padded([p["noise"] for p in payloads], horizon),
            padded([p["run"] for p in payloads], horizon))


def _budget_hits(payloads, run: str) -> np.ndarray:
    return np.array([bool(p[f"{run}_budget_hit"]) for p in payloads])


def alarm_times(found, matrix, budget_hit, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Times to the first alarm for the log-rank and Kaplan-Meier: (times, observed).

    found: detect()'s Detection of the runs in `matrix`. An alarm is an event at its t; no alarm
    is censored at the evaluated length when the run was unobserved past it (cut at H* or H, or
    by the budget), else never (inf: the run stopped by itself). Undecided runs (NaN alarm) get
    -inf: in no risk set. Shapes broadcast (..., n).
    """
    lengths = np.sum(~np.isnan(matrix), axis=-1)
    observed = found.alarm == 1
    cut = (found.length < lengths) | (lengths >= horizon) | budget_hit
    censored = (found.alarm == 0) & cut
    times = np.where(observed | censored, found.time, np.inf)
    return np.where(np.isnan(found.alarm), -np.inf, times), observed


@cached_on_content
def detection_outcome(payloads, settings: AdaptationSettings) -> DetectionOutcome:
    """Calibrate on the noise runs of every doc, then detect on every injection run."""
    noise, runs = _matrices(payloads, settings.horizon_tokens)
    found = detect(noise[None], runs[None], settings.false_alarm_rate, settings.cusum_drift)
    alarm, time, bound = found.alarm[0], found.time[0], found.bound[0]
    control = np.array([bool(p["control"]) for p in payloads])
    times, observed = alarm_times(found, runs[None], _budget_hits(payloads, "run")[None],
                                  settings.horizon_tokens)
    times, observed = times[0], observed[0]
    events = tuple(
        event(time[index], EVENT if observed[index] else CENSORED if np.isfinite(times[index])
              else NEVER)
        for index in np.flatnonzero(~control & ~np.isnan(alarm)))
    return DetectionOutcome(alarm, time, bound, int(found.horizon[0]), control, events, times,
                            observed)


def _rate(alarm: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Alarm share among the decided runs of `members` along the last axis (NaN if none)."""
    decided = members & ~np.isnan(alarm)
    with np.errstate(invalid="ignore"):
        return np.where(decided, alarm, 0.0).sum(axis=-1) / decided.sum(axis=-1)


@cached_on_content
def _rate_intervals(payloads, settings: AdaptationSettings) -> dict[bool, tuple[float, float]]:
    """Cluster-bootstrap percentile intervals of the changed (False) and control (True) alarm
    rates: each resample draws docs with replacement (their noise and injection runs together)
    and re-estimates drift and threshold on the drawn noise runs."""
    noise, runs = _matrices(payloads, settings.horizon_tokens)
    control = np.array([bool(p["control"]) for p in payloads])
    n_docs = len(payloads)
    rng = np.random.default_rng(settings.seed)
    rates = {False: [], True: []}
    for size in _chunks(settings.bootstrap_resamples, noise.size):
        rows = rng.integers(0, n_docs, size=(size, n_docs))
        found = detect(noise[rows], runs[rows], settings.false_alarm_rate, settings.cusum_drift)
        for is_control in (False, True):
            rates[is_control].append(_rate(found.alarm, control[rows] == is_control))
    return {key: percentile_interval(np.concatenate(value), settings.confidence_level)
            for key, value in rates.items()}


def detection_summary(metric: str, stat: str, values, settings: AdaptationSettings) -> float:
    """Aggregation of per-doc detection payloads (per_doc._detection_payload); see keys.METRICS."""
    outcome = detection_outcome(values, settings)
    if metric == "detection_latency":
        if stat in ("median", "median_reached"):
            median = kaplan_meier_median(*unpack(outcome.events))
            return median if stat == "median" else _median_reached(median)
        if stat in ("median_ci_low", "median_ci_high"):
            interval = kaplan_meier_median_interval(*unpack(outcome.events), settings.confidence_level)
            return _interval_end(interval, stat)
        return float(counts(outcome.events)[CENSORED if stat == "censored" else NEVER])
    decided = ~np.isnan(outcome.alarm)
    if metric == "n_undecided":
        return float(np.sum(~decided))
    if metric == "detection_horizon":
        return float(outcome.horizon)
    if metric == "detection_false_alarm_bound":
        return float(np.max(outcome.bound[decided])) if decided.any() else NAN
    if metric == "detection_calibrated":
        # Undecided runs leave the rate without a guarantee for them: uncalibrated.
        return float(decided.all() and np.max(outcome.bound) <= settings.false_alarm_rate + 1e-12)
    if metric == "detection_vs_controls_pvalue":
        return _controls_pvalue(outcome, settings)
    if metric == "detection_latency_vs_controls_pvalue":
        return _latency_vs_controls_pvalue(outcome, settings)
    if metric == "detection_latency_vs_noise_pvalue":
        return _latency_vs_noise_pvalue(values, settings)
    is_control = metric == "control_false_positive_rate"
    if stat == "":
        return float(_rate(outcome.alarm, outcome.control == is_control))
    return _interval_end(_rate_interval(outcome, values, settings, is_control), stat)


def _rate_interval(outcome: DetectionOutcome, payloads, settings: AdaptationSettings,
                   is_control: bool) -> tuple[float, float]:
    """The bootstrap interval of an alarm rate widened to contain the Clopper-Pearson interval of the
    observed alarm count: when every run (or none) alarms, each resample repeats it and the
    percentile bootstrap collapses to one point ([0, 0] from 0 alarms in 199 runs), a certainty
    no finite sample gives; Clopper-Pearson at the fitted threshold gives [0, 0.018] there."""
    members = (outcome.control == is_control) & ~np.isnan(outcome.alarm)
    boot_low, boot_high = _rate_intervals(payloads, settings)[is_control]
    if not members.any():
        return boot_low, boot_high
    exact_low, exact_high = censored_binomial_interval(int(outcome.alarm[members].sum()), 0, int(members.sum()),
                                                       settings.confidence_level)
    return float(np.fmin(boot_low, exact_low)), float(np.fmax(boot_high, exact_high))


def _controls_pvalue(outcome: DetectionOutcome, settings: AdaptationSettings) -> float:
    """Two-sided Fisher exact p-value (the exact conditional permutation test of two binary
    samples): alarm rate of changed vs control injection runs; NaN without both kinds."""
    decided = ~np.isnan(outcome.alarm)
    changed = outcome.alarm[decided & ~outcome.control]
    controls = outcome.alarm[decided & outcome.control]
    if not (changed.size and controls.size):
        return NAN
    table = [[changed.sum(), changed.size - changed.sum()],
             [controls.sum(), controls.size - controls.sum()]]
    return float(stats.fisher_exact(table).pvalue)


def adapted_vs_controls_pvalue(values, settings: AdaptationSettings) -> float:
    """Per-doc {"run": event, "control": bool} of the injection run's adaptation point: log-rank
    test of the time to adaptation within H (later events censored at H), changed vs identical-
    control docs. A control's contexts are identical (a_t = 0.5, no KL gap), so it adapts only
    through a fault of the instrument. NaN without both kinds of doc."""
    times, observed = unpack([value["run"] for value in values])
    late = observed & (times > settings.horizon_tokens)
    times, observed = np.where(late, settings.horizon_tokens, times), observed & ~late
    changed = ~np.array([bool(value["control"]) for value in values])
    return _log_rank_permutation_pvalue(times, observed, changed, settings)


def _chunks(total: int, per_replicate: int):
    """Replicate counts summing to total, each chunk about _CHUNK_FLOATS floats."""
    size = max(1, _CHUNK_FLOATS // max(1, per_replicate))
    while total > 0:
        yield min(size, total)
        total -= size


def _log_rank_permutation_pvalue(times, observed, group, settings: AdaptationSettings) -> float:
    """Log-rank test of group vs the rest; null: the labels are exchangeable. Monte Carlo label
    permutations, so the p-value is valid at any sample size; NaN when a group is empty."""
    if group.all() or not group.any():
        return NAN
    rng = np.random.default_rng(settings.seed)
    replicates = []
    grid_size = max(1, np.unique(times[observed]).size)
    for size in _chunks(settings.permutation_resamples, times.size * grid_size):
        labels = rng.permuted(np.broadcast_to(group, (size, group.size)), axis=-1)
        replicates.append(log_rank_z(times, observed, labels))
    return permutation_pvalue(float(log_rank_z(times, observed, group)), np.concatenate(replicates))


def _latency_vs_controls_pvalue(outcome: DetectionOutcome, settings: AdaptationSettings) -> float:
    """Log-rank test of the time to first alarm of the same detector, changed vs control
    injection runs (the decided ones); NaN without both kinds."""
    decided = outcome.times > -np.inf
    return _log_rank_permutation_pvalue(outcome.times[decided], outcome.observed[decided],
                                        ~outcome.control[decided], settings)


def _latency_vs_noise_pvalue(payloads, settings: AdaptationSettings) -> float:
    """Log-rank test of the time to first alarm, injection vs noise runs of the changed docs.

    Null: a changed doc's injection and noise runs are exchangeable. Each sign-flip permutation
    swaps the two runs of a random subset of changed docs and recalibrates the detector on the
    permuted noise runs (controls' noise runs stay in the calibration), so the calibration is
    part of the permuted statistic. A noise run's alarm time is the same detector's, in sample.
    NaN without a changed doc.
    """
    noise, runs = _matrices(payloads, settings.horizon_tokens)
    budget = {"run": _budget_hits(payloads, "run"), "noise": _budget_hits(payloads, "noise")}
    changed = ~np.array([bool(p["control"]) for p in payloads])
    if not changed.any():
        return NAN
    group = np.repeat([True, False], changed.sum())

    def statistic(flip: np.ndarray) -> np.ndarray:   # flip (R, n_docs) -> Z (R,)
        swap = flip[..., None]
        null, tested = np.where(swap, runs, noise), np.where(swap, noise, runs)
        null_budget = np.where(flip, budget["run"], budget["noise"])
        tested_budget = np.where(flip, budget["noise"], budget["run"])
        # One detector call on both sets of runs of the changed docs: one calibration.
        both = np.concatenate([tested[:, changed], null[:, changed]], axis=1)
        found = detect(null, both, settings.false_alarm_rate, settings.cusum_drift)
        budget_hit = np.concatenate([tested_budget[:, changed], null_budget[:, changed]], axis=1)
        times, observed = alarm_times(found, both, budget_hit, settings.horizon_tokens)
        return log_rank_z(times, observed, group)

    observed_z = float(statistic(np.zeros((1, changed.size), dtype=bool))[0])
    rng = np.random.default_rng(settings.seed)
    replicates = []
    for size in _chunks(settings.permutation_resamples, 3 * noise.size):
        flips = (rng.random((size, changed.size)) < 0.5) & changed
        replicates.append(statistic(flips))
    return permutation_pvalue(observed_z, np.concatenate(replicates))


# ---- paired tests, corrected across the family ------------------------------------------------

def corrected_pvalue(own_key: str, values, settings: AdaptationSettings) -> float:
    """Corrected p-value of `own_key` (e.g. "oracle_convergence@5") in the test family.

    values: per-doc {"<metric>@<N>": [injection value, noise value], ...} of the docs carrying
    the key. Every (metric, N) with at least two pairs is a test (sign-flip permutation,
    two-sided); settings.correction adjusts the family. With fewer pairs there is no test:
    NO_TEST, a key the result hook (kvinject/results_output.py) leaves out.
    """
    return _family_pvalues(values, settings).get(own_key, NO_TEST)


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
