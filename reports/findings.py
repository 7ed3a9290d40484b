"""The findings tables of a study: each finished run's measures against its noise controls, per
injection point, read from the run's results JSON (report: full) and formatted; nothing is computed
here that the metrics did not compute (metrics/README.md defines every key quoted). The Kaplan-Meier
medians with their intervals, and the noise runs' adapted share with its interval, are the metrics'
own aggregations applied to the run's logged per-doc values (--log_samples), so runs aggregated
before the median interval keys existed get them too; each median and share must equal the one
the results JSON gives.

One table per question of docs/results.md that a single run answers:
    adapts      injection vs noise: accuracy on the new problem, share of runs adapted within H
                (and of their noise runs), the paired test, the calibrated detector's rate;
    timing      how long adaptation takes: KM medians of the adaptation point and of the first
                alarm, with their censored and never counts, and the attention on the injected
                segment against the noise run's.
The questions that pair two runs or two points (later update, append vs replace, model vs model)
are the study's comparisons (reports/comparison.py).
"""
from __future__ import annotations

import math

from kvinject.metrics import metric_aggregation

from .comparison import logged_docs
from .runs import Run

NOT_ESTIMABLE = "n/e"


def _value(values: dict, key: str):
    """The value of ``key`` in a task's results (lm-eval's ``,none`` filter suffix); None if absent."""
    return values.get(f"{key},none")


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_ESTIMABLE
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "not reached"
    return f"{value:.{digits}f}"


def _pvalue(value) -> str:
    return NOT_ESTIMABLE if value is None or isinstance(value, str) else f"{value:.3g}"


def _count(value) -> str:
    return NOT_ESTIMABLE if value is None or isinstance(value, str) else str(int(value))


def _interval(values: dict, key: str, low: str, high: str) -> str:
    """``value [low, high]`` of a key and its interval keys."""
    return f"{_number(_value(values, key))} [{_number(_value(values, low))}, {_number(_value(values, high))}]"


def _logged(docs: dict, key: str) -> list:
    """The per-doc values of ``key`` logged by the docs that have it."""
    return [sample[key] for sample in docs.values() if sample.get(key) is not None]


def _aggregated(payloads: list, key: str, settings) -> tuple[float, float, float]:
    """(value, interval low, interval high) of a statistic key (``<metric>_median@N``,
    ``<metric>_share@N``) over per-doc payloads, by the metrics' own aggregations."""
    if not payloads:   # no doc logged the key: lm-eval reports no value for it either
        return math.nan, math.nan, math.nan
    name, _, point = key.partition("@")
    return tuple(float(metric_aggregation(f"{name}{end}@{point}", settings)(payloads))
                 for end in ("", "_ci_low", "_ci_high"))


def _check(key: str, logged: float, reported) -> None:
    """A value aggregated from the samples must be the results JSON's (NaN / inf: not a number there)."""
    finite = isinstance(reported, float) and math.isfinite(reported)
    if (math.isfinite(logged) or finite) and not (finite and abs(logged - reported) <= 1e-9):
        raise ValueError(f"{key}: {logged} from the logged samples, {reported} in the results JSON")


def _median(values: dict, metric: str, point: int, docs: dict, settings) -> str:
    """KM median in tokens [95% interval] with the censored and never counts of the injection runs."""
    key = f"{metric}_median@{point}"
    median, low, high = _aggregated(_logged(docs, key), key, settings)
    _check(key, median, _value(values, key))
    return (f"{_number(median, 1)} [{_number(low, 1)}, {_number(high, 1)}] "
            f"(censored {_count(_value(values, f'{metric}_censored@{point}'))}, "
            f"never {_count(_value(values, f'{metric}_never@{point}'))})")


def _noise_share(values: dict, point: int, docs: dict, settings) -> str:
    """The noise runs' share adapted within H [95% CI]: the injection runs' aggregation applied to
    each doc's noise run; it must be the share minus adaptation_point_vs_noise of the results JSON."""
    key = f"adaptation_point_share@{point}"
    noise_runs = [{"run": payload["noise"], "noise": payload["noise"]} for payload in _logged(docs, key)]
    share, low, high = _aggregated(noise_runs, key, settings)
    injection, difference = _value(values, key), _value(values, f"adaptation_point_vs_noise@{point}")
    numbers = isinstance(injection, float) and isinstance(difference, float)
    _check(f"noise runs' {key}", share, injection - difference if numbers else None)
    return f"{_number(share)} [{_number(low)}, {_number(high)}]"


def _adapts_row(name: str, values: dict, point: int, docs: dict, settings) -> list[str]:
    calibrated = _value(values, f"detection_calibrated@{point}")
    return [name, str(point), _count(_value(values, f"n_docs@{point}")),
            _number(_value(values, "baseline_accuracy")), _number(_value(values, "oracle_accuracy")),
            _number(_value(values, f"injection_accuracy@{point}")),
            _pvalue(_value(values, f"pvalue_injection_accuracy@{point}")),
            _interval(values, f"adaptation_point_share@{point}", f"adaptation_point_share_ci_low@{point}",
                      f"adaptation_point_share_ci_high@{point}"),
            _noise_share(values, point, docs, settings), _number(_value(values, f"adaptation_point_vs_noise@{point}")),
            _pvalue(_value(values, f"pvalue_adaptation_point@{point}")),
            _interval(values, f"detection_rate@{point}", f"detection_rate_ci_low@{point}",
                      f"detection_rate_ci_high@{point}"),
            "yes" if calibrated == 1 else "no",
            _count(_value(values, f"detection_horizon@{point}"))]


def _timing_row(name: str, values: dict, point: int, docs: dict, settings) -> list[str]:
    return [name, str(point), _count(_value(values, f"n_docs@{point}")),
            _median(values, "adaptation_point", point, docs, settings),
            _median(values, "detection_latency", point, docs, settings),
            _interval(values, f"attention_injected@{point}", f"attention_injected_ci_low@{point}",
                      f"attention_injected_ci_high@{point}"),
            _number(_value(values, f"attention_shift@{point}")),
            _pvalue(_value(values, f"pvalue_attention_injected@{point}"))]


ADAPTS_HEADER = ["run", "N", "docs", "baseline acc.", "oracle acc.", "injection acc.", "p (acc. vs noise)",
                 "adapted within H [95% CI]", "noise adapted [95% CI]", "difference", "p (vs noise)",
                 "detection rate [95% CI]", "calibrated", "H*"]
TIMING_HEADER = ["run", "N", "docs", "median adaptation point, tokens [95% CI]", "median first alarm, tokens [95% CI]",
                 "attention on injected segment [95% CI]", "minus noise run's", "p (vs noise)"]


def _points(values: dict) -> list[int]:
    """The injection points of a task's results: those of its ``n_docs@<N>,none`` keys."""
    keys = (key.removesuffix(",none") for key in values if key.endswith(",none"))
    return sorted(int(key[len("n_docs@"):]) for key in keys if key.startswith("n_docs@") and key[len("n_docs@"):].isdigit())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def findings_markdown(runs: dict[str, Run]) -> str:
    """The findings tables of the named runs ({study run name: Run}, in the study's order)."""
    adapts, timing = [], []
    for name, run in runs.items():
        for task, values in run.results["results"].items():
            docs, settings = logged_docs(run, task), run.metric_settings(task)
            for point in _points(values):
                adapts.append(_adapts_row(name, values, point, docs, settings))
                timing.append(_timing_row(name, values, point, docs, settings))
    lines = [
        "# Findings tables (generated: `kvinject study <file> --results_only`)", "",
        "Every value is a key of the run's results JSON (report: full; metrics/README.md defines them), "
        "or, for the noise runs' share and the medians' intervals, the same aggregation of the logged "
        "per-doc values. "
        "n/e: not estimable; H: the horizon (32 tokens); H*: the detector's evaluated length. "
        "p-values are uncorrected except the paired tests' (Holm over the run's paired metrics).", "",
        "## Does the model adapt? Injection vs its noise control", "",
        *_table(ADAPTS_HEADER, adapts), "",
        "## How long adaptation takes, and attention meanwhile", "",
        "Medians are Kaplan-Meier over the injection runs (not reached: under half of the runs adapt "
        "within their tokens), with their Brookmeyer-Crowley 95% interval (not reached as an end: "
        "unbounded), aggregated from the logged per-doc values; censored: the token budget ended the "
        "run first; never: the run stopped (EOS) without the event.", "",
        *_table(TIMING_HEADER, timing), "",
    ]
    return "\n".join(lines)
