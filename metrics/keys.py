"""The catalogue of result keys: names, units, directions and the grammar of a key.

A key is `<metric>@<N>` for a metric of injection point N (any N), or `<metric>` for the two
N-independent accuracies. Derived keys of a metric carry the same per-doc value as the metric:
    <metric>_ci_low@N, <metric>_ci_high@N   bootstrap interval (settings.confidence_level)
    <metric>_censored@N                     number of censored runs (time-to-event metrics only)
    pvalue_<metric>@N                       corrected paired permutation p-value, injection vs noise
    <metric>_layer<l>@N                     the metric of layer l alone (1-based; per-layer ones)
"""

from __future__ import annotations

import dataclasses
import re

# How a metric's per-doc values are aggregated (see aggregations.py).
MEAN = "mean"                    # per-doc float; lm-eval's own `mean` (it adds a standard error)
TIME_TO_EVENT = "time_to_event"  # per-doc {"time", "observed"}; Kaplan-Meier median
DETECTION = "detection"          # per-doc CUSUM series of the injection and noise runs


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    kind: str
    higher_is_better: bool
    description: str
    per_injection_point: bool = True
    per_layer: bool = False
    paired_test: bool = False          # tested injection vs noise (pvalue_<metric>@N)
    detection_summary: str | None = None  # DETECTION only: "latency" or "rate"
    from_controls: bool = False  # carried by identical-problem controls instead of changed docs

    @property
    def censored(self) -> bool:
        """Whether the metric is a time to an event, with right-censored runs."""
        return self.kind == TIME_TO_EVENT or self.detection_summary == "latency"


METRICS: dict[str, MetricSpec] = {
    "baseline_accuracy": MetricSpec(
        MEAN, True, "baseline run answers the original answer [share]", per_injection_point=False),
    "oracle_accuracy": MetricSpec(
        MEAN, True, "oracle run (new prompt) answers the alternative [share]",
        per_injection_point=False),
    "injection_accuracy": MetricSpec(
        MEAN, True, "injection@N run answers the alternative [share]", paired_test=True),
    "stuck_rate": MetricSpec(MEAN, False, "injection@N run answers the original [share]"),
    "adaptation_gap": MetricSpec(
        MEAN, False, "oracle accuracy - injection@N accuracy [share difference, -1..1]"),
    "noise_specificity": MetricSpec(MEAN, True, "noise@N run keeps the original answer [share]"),
    "adaptation_score": MetricSpec(
        MEAN, True, "mean a_t over all post-injection tokens [0..1]", paired_test=True),
    "oracle_convergence": MetricSpec(
        MEAN, True, "mean a_t over the final W tokens [0..1]", paired_test=True),
    "final_log_ratio": MetricSpec(
        MEAN, True, "mean log p_new - log p_old of the run's tokens, final W tokens [nats]",
        paired_test=True),
    "attention_injected": MetricSpec(
        MEAN, True, "attention mass on the injected segment, sink excluded, all post-injection "
        "tokens, mean over layers [0..1]", per_layer=True, paired_test=True),
    "attention_original": MetricSpec(
        MEAN, False, "attention mass on the original prompt, sink excluded, all post-injection "
        "tokens, mean over layers [0..1]", per_layer=True),
    "attention_shift": MetricSpec(
        MEAN, True, "attention_injected of the injection run - of the noise run [-1..1]"),
    "final_attention_ratio": MetricSpec(
        MEAN, True, "injected / original-prompt attention mass over the final W tokens [ratio]",
        paired_test=True),
    "embedding_similarity": MetricSpec(
        MEAN, True, "cosine of the run's hidden state to the new context's, final W tokens, "
        "last layer [-1..1]", per_layer=True, paired_test=True),
    "adaptation_point": MetricSpec(
        TIME_TO_EVENT, False, "first t with a_t > adapted_threshold, KM median [tokens]"),
    "stabilization": MetricSpec(
        TIME_TO_EVENT, False, "first t from which a_t > adapted_threshold holds, KM median "
        "[tokens]"),
    "attention_stabilization": MetricSpec(
        TIME_TO_EVENT, False, "first t from which injected/original attention > "
        "attention_ratio_threshold holds, KM median [tokens]"),
    "detection_latency": MetricSpec(
        DETECTION, False, "first t of a CUSUM alarm calibrated on the noise@N runs, KM median "
        "[tokens]", detection_summary="latency"),
    "detection_rate": MetricSpec(
        DETECTION, True, "share of changed-problem injection runs with an alarm [share]",
        detection_summary="rate"),
    "control_false_positive_rate": MetricSpec(
        DETECTION, False, "share of identical-problem (control) injection runs with an alarm "
        "[share]", detection_summary="rate", from_controls=True),
}

PAIRED_METRICS = tuple(name for name, spec in METRICS.items() if spec.paired_test)

CI_LOW, CI_HIGH, CENSORED, PVALUE = "ci_low", "ci_high", "censored", "pvalue"

_KEY = re.compile(
    r"^(?P<pvalue>pvalue_)?(?P<metric>[a-z_]+?)"
    r"(?:_layer(?P<layer>[1-9][0-9]*)|_(?P<derived>ci_low|ci_high|censored))?"
    r"(?:@(?P<point>[0-9]+))?$"
)


@dataclasses.dataclass(frozen=True)
class ParsedKey:
    metric: str
    injection_point: int | None = None
    derived: str | None = None   # CI_LOW, CI_HIGH, CENSORED, PVALUE or None
    layer: int | None = None

    @property
    def spec(self) -> MetricSpec:
        return METRICS[self.metric]


def format_key(metric: str, injection_point: int | None = None, derived: str | None = None,
               layer: int | None = None) -> str:
    name = f"pvalue_{metric}" if derived == PVALUE else metric
    if layer is not None:
        name += f"_layer{layer}"
    elif derived in (CI_LOW, CI_HIGH, CENSORED):
        name += f"_{derived}"
    return name if injection_point is None else f"{name}@{injection_point}"


def parse_key(key: str) -> ParsedKey:
    """Parse and validate a result key; ValueError naming the key and the known metrics."""
    match = _KEY.match(key)
    if match is None or match["metric"] not in METRICS:
        raise ValueError(f"unknown adaptation result key {key!r}; metrics: {', '.join(METRICS)}")
    spec = METRICS[match["metric"]]
    derived = PVALUE if match["pvalue"] else match["derived"]
    parsed = ParsedKey(
        metric=match["metric"],
        injection_point=None if match["point"] is None else int(match["point"]),
        derived=derived,
        layer=None if match["layer"] is None else int(match["layer"]),
    )
    problems = [
        (spec.per_injection_point != (parsed.injection_point is not None),
         "needs '@<N>'" if spec.per_injection_point else "takes no '@<N>'"),
        (parsed.layer is not None and not spec.per_layer, "has no per-layer values"),
        (bool(match["pvalue"]) and (match["derived"] or parsed.layer), "mixes suffixes"),
        (derived == PVALUE and not spec.paired_test, "has no paired test"),
        (derived == CENSORED and not spec.censored, "has no censoring"),
    ]
    for failed, reason in problems:
        if failed:
            raise ValueError(f"invalid adaptation result key {key!r}: {parsed.metric} {reason}")
    return parsed


def metric_higher_is_better(key: str) -> bool:
    """Direction of a key: its metric's; False for censored counts and p-values."""
    parsed = parse_key(key)
    if parsed.derived in (CENSORED, PVALUE):
        return False
    return parsed.spec.higher_is_better


def carrier_keys(metric: str, injection_point: int | None, settings) -> list[str]:
    """The metric's key and the derived keys that carry the same per-doc value."""
    spec = METRICS[metric]
    derived = [None]
    if settings.confidence_intervals:
        derived += [CI_LOW, CI_HIGH]
    if spec.censored:
        derived.append(CENSORED)
    return [format_key(metric, injection_point, suffix) for suffix in derived]


def result_keys(injection_points, settings, n_layers: int = 0) -> list[str]:
    """Every key `doc_metrics` can emit for these injection points (per-layer keys for n_layers).

    For a task that builds its aggregation and direction tables before seeing any trace; a run
    reports the subset its docs produce (e.g. no attention keys without track_attention).
    """
    keys = []
    for metric, spec in METRICS.items():
        for point in injection_points if spec.per_injection_point else [None]:
            keys += carrier_keys(metric, point, settings)
            if spec.paired_test:
                keys.append(format_key(metric, point, PVALUE))
            if spec.per_layer and settings.per_layer:
                keys += [format_key(metric, point, layer=layer) for layer in range(1, n_layers + 1)]
    return keys
