"""Adaptation curves: per-token series averaged over problems, against tokens since the injection.

For each injection point N and each of injection@N and noise@N, every changed-problem doc that was
injected at N contributes one value per post-injection token t = 1..T of its run (identical-problem
controls are left out: there is nothing to adapt to, a_t is 0.5 by definition). The series
(CURVE_SERIES) come from the trace with the metric package's own per-token functions:

    adaptation_score     a_t = KL(run||old) / (KL(run||old) + KL(run||new))      [0..1]
    adapted_share        1 if adapted at t (the metrics' rule, series.adapted_tokens) else 0 (its mean: share of docs adapted at t)
    kl_run_new           KL(run||new context), nats
    kl_run_old           KL(run||old context), nats
    attention_injected   attention mass on the injected segment, sink removed, mean over layers [0..1]
    attention_original   attention mass on the original prompt, likewise [0..1]

Estimand at each t: the mean of the series over problems whose run is still going at t (runs
end at a stop sequence, so later t average fewer problems; `Band.n_docs` says how many).
Interval: pointwise percentile bootstrap over problems (problems resampled with replacement,
the whole run of a problem kept together), at `confidence_level`; no interval where fewer than
two problems reach t. tests/reports/test_reports_curves.py checks its coverage by simulation.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from kvinject.metrics import AdaptationSettings
from kvinject.metrics.series import adaptation_scores, adapted_tokens, non_sink_masses
from kvinject.metrics.settings import min_kl_gap

CURVE_SERIES = ("adaptation_score", "adapted_share", "kl_run_new", "kl_run_old",
                "attention_injected", "attention_original")
KINDS = ("injection", "noise")


@dataclasses.dataclass(frozen=True)
class Band:
    """A curve: mean over problems at t = 1..len(mean), pointwise interval (NaN where undefined)."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_docs: np.ndarray   # problems whose run reaches t

    @property
    def tokens(self) -> np.ndarray:
        return np.arange(1, self.mean.size + 1)


@dataclasses.dataclass(frozen=True)
class CurveKey:
    model: str
    point: int
    kind: str   # "injection" or "noise"


def run_series(entry: dict, settings: AdaptationSettings, trace_settings: dict | None = None) -> dict[str, np.ndarray]:
    """The CURVE_SERIES of one injection or noise run (one value per post-injection token);
    the attention series only when the run tracked attention. trace_settings: the trace's, whose
    precision sets the adapted rule's minimum KL gap as in the metrics (float32 when None)."""
    series = entry["series"]
    scores = adaptation_scores(series["kl_run_old"], series["kl_run_new"])
    gap = min_kl_gap(settings, trace_settings or {})
    values = {
        "adaptation_score": scores,
        "adapted_share": adapted_tokens(series["kl_run_old"], series["kl_run_new"], settings.adapted_threshold,
                                        gap).astype(float),
        "kl_run_new": np.asarray(series["kl_run_new"], dtype=float),
        "kl_run_old": np.asarray(series["kl_run_old"], dtype=float),
    }
    if "attention" in series and scores.size:
        masses = non_sink_masses(series["attention"])
        values["attention_injected"] = masses["injected"].mean(axis=-1)
        values["attention_original"] = masses["original_prompt"].mean(axis=-1)
    return values


def is_control(trace: dict) -> bool:
    """Whether the trace is an identical control (the original and alternative prompts have the same ids)."""
    prompts = trace["prompts"]
    return prompts["original"]["ids"] == prompts["alternative"]["ids"]


def mean_band(runs: list[np.ndarray], resamples: int = 1000, confidence_level: float = 0.95,
              seed: int = 0) -> Band:
    """Pointwise mean over runs of unequal length and its percentile bootstrap interval over runs.

    Resampling draws whole runs; at each t the mean is over the drawn runs that reach t.
    """
    length = max((run.size for run in runs), default=0)
    values = np.zeros((len(runs), length))
    present = np.zeros((len(runs), length))
    for row, run in enumerate(runs):
        values[row, :run.size], present[row, :run.size] = run, 1.0
    n_docs = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=0) / n_docs
        # How often each run is drawn in each resample; sums and counts follow by one product.
        weights = np.random.default_rng(seed).multinomial(len(runs), np.full(len(runs), 1 / len(runs)),
                                                          size=resamples) if runs else np.zeros((0, 0))
        resampled = (weights @ values) / (weights @ present)
    tail = (1 - confidence_level) / 2
    low, high = np.full(length, np.nan), np.full(length, np.nan)
    enough = n_docs >= 2
    if enough.any():
        low[enough], high[enough] = np.nanquantile(resampled[:, enough], [tail, 1 - tail], axis=0)
    return Band(mean, low, high, n_docs.astype(int))


def task_curves(traces_by_model: dict[str, list[dict]], settings: AdaptationSettings,
                resamples: int = 1000, confidence_level: float = 0.95, seed: int = 0,
                ) -> dict[CurveKey, dict[str, Band]]:
    """Curves of every model, injection point and kind over one task's traces."""
    curves = {}
    for model, traces in traces_by_model.items():
        changed = [trace for trace in traces if not is_control(trace)]
        points = sorted({point for trace in changed for point in trace["settings"]["injection_points"]})
        for point in points:
            for kind in KINDS:
                per_run = [run_series(trace["conditions"][f"{kind}@{point}"], settings, trace["settings"])
                           for trace in changed if trace["conditions"].get(f"{kind}@{point}", {}).get("injected")]
                bands = {name: mean_band([series[name] for series in per_run if name in series],
                                         resamples, confidence_level, seed)
                         for name in CURVE_SERIES if any(name in series for series in per_run)}
                if bands:
                    curves[CurveKey(model, point, kind)] = bands
    return curves
