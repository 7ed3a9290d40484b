"""The catalogue of result keys: names, units, directions, headline set and the grammar of a key.

A key is `[pvalue_]<metric>[_<stat>|_layer<l>]@<N>` (`baseline_accuracy`, `oracle_accuracy` have
no `@N`). Each metric kind has its own statistics (`stat`, "" = the metric's own value):
    MEAN           ""  lm-eval mean (with its stderr); ci_low, ci_high (bootstrap BCa)
    COUNT          ""  number of docs
    TIME_TO_EVENT  share (event within the horizon H, Kaplan-Meier; NaN = not estimable when the
                   budget ends runs before H), share_ci_low, share_ci_high (censoring-bounded
                   Clopper-Pearson), median (KM; inf = not reached), median_ci_low,
                   median_ci_high (Brookmeyer-Crowley; inf = unbounded), median_reached (1 / 0),
                   censored, never (run counts), vs_noise (share of injection runs - share of
                   noise runs)
    DETECTION      as listed per metric below (rate, intervals, latency, calibration, tests)
    CONTROL_TEST   ""  p-value of changed-problem vs identical-control injection runs
    MAXIMUM        ""  the largest per-doc value
`pvalue_<metric>@N`: corrected paired sign-flip p-value, injection vs noise (paired metrics).
`<metric>_layer<l>@N`: the metric of layer l alone (1-based; per-layer metrics).
"""

from __future__ import annotations

import dataclasses
import re

MEAN = "mean"                    # per-doc float; lm-eval's own `mean` (it adds a standard error)
COUNT = "count"                  # per-doc 1.0; summed
TIME_TO_EVENT = "time_to_event"  # per-doc {"run": event, "noise": event}
DETECTION = "detection"          # per-doc horizon statistic series of the injection and noise runs
CONTROL_TEST = "control_test"    # per-doc {"run": event, "control": bool}: changed vs control docs
MAXIMUM = "maximum"              # per-doc float; the largest over docs

CI_LOW, CI_HIGH = "ci_low", "ci_high"
PVALUE = "pvalue"
_STATS = {
    MEAN: ("", CI_LOW, CI_HIGH),
    COUNT: ("",),
    MAXIMUM: ("",),
    TIME_TO_EVENT: ("share", "share_ci_low", "share_ci_high", "median", "median_ci_low", "median_ci_high",
                    "median_reached", "censored", "never", "vs_noise"),
}
_INTERVAL_STATS = {CI_LOW, CI_HIGH, "share_ci_low", "share_ci_high", "median_ci_low", "median_ci_high"}


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    kind: str
    higher_is_better: bool
    description: str
    per_injection_point: bool = True
    per_layer: bool = False
    paired_test: bool = False          # tested injection vs noise (pvalue_<metric>@N)
    stats: tuple[str, ...] | None = None   # DETECTION: its own statistics
    from_controls: bool = False        # carried by identical-problem controls (and changed docs)
    needs: str | None = None           # trace setting the metric needs (track_attention/_hidden)

    def valid_stats(self) -> tuple[str, ...]:
        return self.stats if self.stats is not None else _STATS[self.kind]


METRICS: dict[str, MetricSpec] = {
    "baseline_accuracy": MetricSpec(
        MEAN, True, "baseline run answers the original answer [share]", per_injection_point=False),
    "oracle_accuracy": MetricSpec(
        MEAN, True, "oracle run (new prompt) answers the alternative [share]",
        per_injection_point=False),
    "n_docs": MetricSpec(COUNT, True, "changed-problem docs injected at N: the denominator of "
                         "every @N metric of changed docs [docs]"),
    "n_controls": MetricSpec(COUNT, True, "identical-problem control docs injected at N; the "
                             "detection keys of N use n_docs + n_controls docs [docs]",
                             from_controls=True),
    "kl_noise_floor": MetricSpec(
        MAXIMUM, False, "largest |KL(run||old) - KL(run||new)| of any token of the identical-problem "
        "controls' injection and noise runs at N, whose old and new contexts are the same tokens: "
        "what rounding alone gives the adapted rule's KL gap [nats]", from_controls=True),
    "injection_accuracy": MetricSpec(
        MEAN, True, "injection@N run answers the alternative [share]", paired_test=True),
    "stuck_rate": MetricSpec(MEAN, False, "injection@N run answers the original [share]"),
    "adaptation_gap": MetricSpec(
        MEAN, False, "oracle accuracy - injection@N accuracy on the same doc [-1..1]"),
    "noise_specificity": MetricSpec(MEAN, True, "noise@N run keeps the original answer [share]"),
    "adaptation_score": MetricSpec(
        MEAN, True, "mean a_t over all post-injection tokens [0..1]", paired_test=True),
    "oracle_convergence": MetricSpec(
        MEAN, True, "mean a_t over the final W tokens [0..1]", paired_test=True),
    "final_log_ratio": MetricSpec(
        MEAN, True, "mean log p_new - log p_old of the run's tokens, final W tokens [nats]",
        paired_test=True),
    "kl_run_new": MetricSpec(
        MEAN, False, "mean KL(run||new context) over the first H tokens [nats]", paired_test=True),
    "kl_run_old": MetricSpec(
        MEAN, True, "mean KL(run||old context) over the first H tokens [nats]", paired_test=True),
    "attention_injected": MetricSpec(
        MEAN, True, "attention mass on the injected segment, sink excluded, all post-injection "
        "tokens, mean over layers [0..1]", per_layer=True, paired_test=True,
        needs="track_attention"),
    "attention_original": MetricSpec(
        MEAN, False, "attention mass on the original prompt, sink excluded, all post-injection "
        "tokens, mean over layers [0..1]", per_layer=True, needs="track_attention"),
    "attention_shift": MetricSpec(
        MEAN, True, "attention_injected of the injection run - of the noise run [-1..1]",
        needs="track_attention"),
    "final_attention_ratio": MetricSpec(
        MEAN, True, "injected / original-prompt attention mass over the final W tokens [ratio]",
        paired_test=True, needs="track_attention"),
    "embedding_similarity": MetricSpec(
        MEAN, True, "cosine of the run's hidden state to the new context's, final W tokens, "
        "last layer [-1..1]", per_layer=True, paired_test=True, needs="track_hidden"),
    "embedding_contrast": MetricSpec(
        MEAN, True, "cos(run, new) - cos(run, old) of the hidden states, final W tokens, last "
        "layer [-2..2]", paired_test=True, needs="track_hidden"),
    "embedding_contrast_mid": MetricSpec(
        MEAN, True, "cos(run, new) - cos(run, old), final W tokens, middle layer (ceil(L / 2) of L) "
        "[-2..2]", paired_test=True, needs="track_hidden"),
    "adaptation_point": MetricSpec(
        TIME_TO_EVENT, True, "first t with a_t > adapted_threshold and a KL gap > "
        "adapted_min_kl_gap [share within H / tokens]", paired_test=True),
    "stabilization": MetricSpec(
        TIME_TO_EVENT, True, "first t from which the adaptation criterion holds [share within H "
        "/ tokens]", paired_test=True),
    "attention_stabilization": MetricSpec(
        TIME_TO_EVENT, True, "first t from which injected/original attention > "
        "attention_ratio_threshold holds [share within H / tokens]", paired_test=True,
        needs="track_attention"),
    "adaptation_point_vs_controls_pvalue": MetricSpec(
        CONTROL_TEST, False, "log-rank p-value, time to adaptation within H of changed vs "
        "control injection runs; label permutations (uncorrected)", stats=("",),
        from_controls=True),
    "detection_rate": MetricSpec(
        DETECTION, True, "share of changed-problem injection runs with a calibrated CUSUM alarm "
        "within H* = detection_horizon (H unless the noise runs are shorter) [share]",
        stats=("", CI_LOW, CI_HIGH)),
    "detection_latency": MetricSpec(
        DETECTION, False, "first alarm t, Kaplan-Meier median (inf: not reached) [tokens] and its "
        "interval (median_ci_low / _high); median_reached 1 / 0; censored / never counts",
        stats=("median", "median_ci_low", "median_ci_high", "median_reached", "censored", "never")),
    "detection_horizon": MetricSpec(
        DETECTION, True, "H*: the detector's evaluated length, min(H, the k-th longest noise run), "
        "k = min(ceil(1/alpha - 1), noise runs with a token) [tokens]", stats=("",)),
    "n_undecided": MetricSpec(
        DETECTION, False, "injection runs the detector could not decide (no noise run has a token); "
        "the rates leave them out and detection_calibrated is 0 [runs]", stats=("",),
        from_controls=True),
    "detection_false_alarm_bound": MetricSpec(
        DETECTION, False, "conformal bound on a fresh null run's alarm probability [probability]",
        stats=("",)),
    "detection_calibrated": MetricSpec(
        DETECTION, True, "1: the noise runs support false_alarm_rate; 0: calibration too small "
        "(n < 1/alpha - 1), no alpha claimed [flag]", stats=("",)),
    "control_false_positive_rate": MetricSpec(
        DETECTION, False, "share of identical-problem control injection runs on which the same "
        "detector alarms [share]", stats=("", CI_LOW, CI_HIGH), from_controls=True),
    "detection_vs_controls_pvalue": MetricSpec(
        DETECTION, False, "Fisher exact p-value, alarm rate of changed vs control injection "
        "runs (uncorrected)", stats=("",), from_controls=True),
    "detection_latency_vs_noise_pvalue": MetricSpec(
        DETECTION, False, "log-rank p-value, time to first alarm of changed-problem injection vs "
        "noise runs; sign-flip permutations, detector recalibrated in each (uncorrected)",
        stats=("",)),
    "detection_latency_vs_controls_pvalue": MetricSpec(
        DETECTION, False, "log-rank p-value, time to first alarm of changed vs control injection "
        "runs; label permutations (uncorrected)", stats=("",), from_controls=True),
}

# The headline measures (result keys without @N), in reading order; every list of them lives here.
# HEADLINE: the default lm-eval table (report: headline), the main measures per injection point.
HEADLINE = (
    "baseline_accuracy", "oracle_accuracy", "n_docs", "injection_accuracy", "adaptation_gap",
    "adaptation_point_share", "adaptation_point_vs_noise", "detection_rate", "detection_calibrated", "kl_run_new",
    "embedding_contrast", "kl_noise_floor",
)
# LEADERBOARD: the headline measures that tell models apart, the columns of `kvinject report`'s
# leaderboard (the accuracies without @N, n_docs and the calibration flag stay in the results JSON).
LEADERBOARD = tuple(name for name in HEADLINE
                    if name not in ("baseline_accuracy", "oracle_accuracy", "n_docs", "detection_calibrated"))
# ONE_PROBLEM: what `kvinject single` prints per injection point, the values one doc has (statistics
# over docs, such as detection rates and p-values, need many problems).
ONE_PROBLEM = (
    "adaptation_point_share", "stabilization_share", "adaptation_score", "oracle_convergence",
    "final_log_ratio", "attention_injected", "attention_shift", "embedding_similarity",
    "injection_accuracy", "stuck_rate", "noise_specificity",
)

PAIRED_METRICS = tuple(name for name, spec in METRICS.items() if spec.paired_test)

_KEY = re.compile(r"^(?P<pvalue>pvalue_)?(?P<name>[a-z_]+?)(?:_layer(?P<layer>[1-9][0-9]*))?"
                  r"(?:@(?P<point>[0-9]+))?$")


@dataclasses.dataclass(frozen=True)
class ParsedKey:
    metric: str
    injection_point: int | None = None
    stat: str = ""            # one of the kind's statistics, "" = the metric itself, or PVALUE
    layer: int | None = None

    @property
    def spec(self) -> MetricSpec:
        return METRICS[self.metric]


def format_key(metric: str, injection_point: int | None = None, stat: str = "",
               layer: int | None = None) -> str:
    """The result key ``[pvalue_]metric[_stat][_layer<L>][@<N>]`` (parse_key reads it back)."""
    if stat == PVALUE:
        name = f"pvalue_{metric}"
    else:
        name = f"{metric}_{stat}" if stat else metric
    if layer is not None:
        name += f"_layer{layer}"
    return name if injection_point is None else f"{name}@{injection_point}"


def _split(name: str) -> tuple[str, str] | None:
    if name in METRICS:
        return name, ""
    for metric, spec in METRICS.items():
        stat = name[len(metric) + 1:]
        if name.startswith(metric + "_") and stat in spec.valid_stats():
            return metric, stat
    return None


def parse_key(key: str) -> ParsedKey:
    """Parse and validate a result key; ValueError naming the key and the known metrics."""
    match = _KEY.match(key)
    split = _split(match["name"]) if match else None
    if split is None or (match["pvalue"] and split[1]):
        raise ValueError(f"unknown adaptation result key {key!r}; metrics: {', '.join(METRICS)}")
    metric, stat = split
    spec = METRICS[metric]
    parsed = ParsedKey(
        metric=metric,
        injection_point=None if match["point"] is None else int(match["point"]),
        stat=PVALUE if match["pvalue"] else stat,
        layer=None if match["layer"] is None else int(match["layer"]),
    )
    problems = [
        (spec.per_injection_point != (parsed.injection_point is not None),
         "needs '@<N>'" if spec.per_injection_point else "takes no '@<N>'"),
        (parsed.layer is not None and (not spec.per_layer or stat), "has no such per-layer value"),
        (parsed.stat == PVALUE and (not spec.paired_test or parsed.layer), "has no paired test"),
        ("" not in spec.valid_stats() and parsed.stat == "", "needs a statistic suffix"),
    ]
    for failed, reason in problems:
        if failed:
            raise ValueError(f"invalid adaptation result key {key!r}: {metric} {reason}")
    return parsed


def split_interval(stat: str) -> tuple[str, str | None]:
    """(statistic, interval end) of a statistic: ("share", "ci_low") for share_ci_low, ("", "ci_high")
    for ci_high, (stat, None) for a statistic that is no interval end."""
    for end in (CI_LOW, CI_HIGH):
        if stat == end or stat.endswith("_" + end):
            return stat[: -len(end)].rstrip("_"), end
    return stat, None


def metric_higher_is_better(key: str) -> bool:
    """Direction of a key: its metric's; False for counts of censored/never runs and p-values,
    True for the number of docs; an interval end has its metric's direction."""
    parsed = parse_key(key)
    stat, _ = split_interval(parsed.stat)
    if stat in (PVALUE, "censored", "never"):
        return False
    if stat == "median_reached":
        return True
    if stat == "median":
        return not parsed.spec.higher_is_better if parsed.spec.kind == TIME_TO_EVENT else False
    return parsed.spec.higher_is_better


def is_headline(key: str) -> bool:
    """Whether ``key`` is a HEADLINE measure (any injection point, no layer); ValueError for an unknown key."""
    parsed = parse_key(key)
    return parsed.layer is None and format_key(parsed.metric, None, parsed.stat) in HEADLINE


def carrier_keys(metric: str, injection_point: int | None, settings) -> list[str]:
    """The metric's keys that carry the same per-doc value, as the settings' report selects."""
    spec = METRICS[metric]
    keys = []
    for stat in spec.valid_stats():
        if stat in _INTERVAL_STATS and not settings.confidence_intervals:
            continue
        key = format_key(metric, injection_point, stat)
        if settings.report == "full" or is_headline(key):
            keys.append(key)
    return keys


def result_keys(injection_points, settings, n_layers: int = 0) -> list[str]:
    """Every key `doc_metrics` can emit for these injection points (per-layer keys for n_layers).

    A run reports the subset its docs produce (e.g. no attention keys without track_attention).
    """
    keys = []
    for metric, spec in METRICS.items():
        for point in injection_points if spec.per_injection_point else [None]:
            keys += carrier_keys(metric, point, settings)
            if settings.report != "full":
                continue
            if spec.paired_test:
                keys.append(format_key(metric, point, PVALUE))
            if spec.per_layer and settings.per_layer:
                keys += [format_key(metric, point, layer=layer) for layer in range(1, n_layers + 1)]
    return keys
