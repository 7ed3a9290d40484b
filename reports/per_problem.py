"""Per-problem JSON in the original study's format, every value derived from the trace.

One dict per doc with the study's keys (problem_index, original_problem, alternative_problem,
timestamp, model, token_analysis, attention_analysis, causal_analysis, unified_summary). The
numbers are the per-doc values of the metric package (`kvinject.metrics.doc_metrics` with the
run's own metric settings) or the metric package's per-token series; the qualitative labels
follow the study's rules with the thresholds of `LabelThresholds`. reports/README.md lists every
rule; the ones that need a choice are in the docstrings below.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from kvinject.metrics import AdaptationSettings, doc_metrics
from kvinject.metrics.series import adapted_tokens
from kvinject.metrics.settings import min_kl_gap
from kvinject.settings_mapping import from_mapping

from .curves import is_control

ASSESSMENTS = ("excellent", "good", "slow", "partial", "failed")  # best first, as in the study
ADAPTED_ASSESSMENTS = ("excellent", "good", "slow")
NOT_INJECTED, CONTROL = "not injected", "identical control"


@dataclasses.dataclass(frozen=True)
class LabelThresholds:
    """The thresholds of the qualitative labels (the study's values are the defaults).

    adapted_share: "excellent"/"good"/"slow" need adaptation_quality (share of post-injection
        tokens with a_t > adapted_threshold) above this [share, 0..1].
    excellent_latency / good_latency: adaptation latency below these [tokens] is "excellent" /
        "good"; an adapted run at or above good_latency is "slow".
    poor_adaptation / good_adaptation: mean_adaptation (mean a_t over the injection points)
        below poor_adaptation gives the "poor" recommendation, from good_adaptation the "good"
        one, in between the "moderate" one [score, 0..1].
    """

    adapted_share: float = 0.5
    excellent_latency: int = 5
    good_latency: int = 10
    poor_adaptation: float = 0.3
    good_adaptation: float = 0.7

    def __post_init__(self) -> None:
        for name in ("adapted_share", "poor_adaptation", "good_adaptation"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"label threshold {name!r} must be a number in [0, 1], got {value!r}")
        for name in ("excellent_latency", "good_latency"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"label threshold {name!r} must be an integer >= 1, got {value!r}")
        if self.excellent_latency > self.good_latency:
            raise ValueError("label threshold 'excellent_latency' must be <= 'good_latency'")
        if self.poor_adaptation > self.good_adaptation:
            raise ValueError("label threshold 'poor_adaptation' must be <= 'good_adaptation'")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> "LabelThresholds":
        return from_mapping(cls, mapping, "label threshold")


def assess(adapted: bool, latency: int | None, quality: float, thresholds: LabelThresholds) -> str:
    """The study's assessment of one injection run."""
    if adapted and quality > thresholds.adapted_share:
        if latency < thresholds.excellent_latency:
            return "excellent"
        return "good" if latency < thresholds.good_latency else "slow"
    return "partial" if adapted else "failed"


def _token_summary(trace: dict, point: int, values: dict, settings: AdaptationSettings,
                   thresholds: LabelThresholds) -> dict:
    """adapted: some post-injection token is adapted (series.adapted_tokens); latency: the first such t
    (the per-doc adaptation_point event of adaptation_point_share@N); quality: the share of post-injection
    tokens that are adapted."""
    run = trace["conditions"][f"injection@{point}"]
    if is_control(trace):
        return {"adapted": None, "adaptation_latency_tokens": None, "adaptation_quality": None,
                "assessment": CONTROL}
    event = values.get(f"adaptation_point_share@{point}")
    if not run["injected"] or event is None:
        return {"adapted": None, "adaptation_latency_tokens": None, "adaptation_quality": None,
                "assessment": NOT_INJECTED, "reason": run["not_injected_reason"] or "no post-injection token"}
    adapted_at = adapted_tokens(run["series"]["kl_run_old"], run["series"]["kl_run_new"], settings.adapted_threshold,
                                min_kl_gap(settings, trace["settings"]))
    quality = float(np.mean(adapted_at)) if adapted_at.size else 0.0
    adapted = event["run"]["status"] == "event"
    latency = int(event["run"]["time"]) if adapted else None
    return {"adapted": adapted, "adaptation_latency_tokens": latency, "adaptation_quality": quality,
            "assessment": assess(adapted, latency, quality, thresholds)}


def _attention(values: dict, point: int) -> dict | None:
    """stabilization_tokens: the per-doc attention_stabilization event (null when never reached);
    attention_shift_magnitude: attention_shift@N (injected-segment mass of the injection run minus
    the noise run's); final_attention_ratio: final_attention_ratio@N (null when undefined)."""
    event = values.get(f"attention_stabilization_share@{point}")
    if event is None:
        return None
    run = event["run"]
    return {"stabilization_tokens": int(run["time"]) if run["status"] == "event" else None,
            "attention_shift_magnitude": values.get(f"attention_shift@{point}"),
            "final_attention_ratio": values.get(f"final_attention_ratio@{point}")}


def _recommendations(mean_adaptation: float | None, scores: dict[int, float], optimal: int | None,
                     thresholds: LabelThresholds) -> list[str]:
    """The study's three rules: the level of mean_adaptation, the trend from the first to the last
    injection point's adaptation score, and the optimal point."""
    if mean_adaptation is None:
        return []
    if mean_adaptation < thresholds.poor_adaptation:
        advice = [f"Poor adaptation (mean a_t {mean_adaptation:.3f} < {thresholds.poor_adaptation:g}): "
                  "consider re-prompting instead of injection."]
    elif mean_adaptation < thresholds.good_adaptation:
        advice = [f"Moderate adaptation (mean a_t {mean_adaptation:.3f}): try earlier injection points."]
    else:
        advice = [f"Good adaptation capability (mean a_t {mean_adaptation:.3f} >= {thresholds.good_adaptation:g}): "
                  "KV-cache injection is viable for this model."]
    points = sorted(scores)
    if len(points) > 1 and scores[points[-1]] < scores[points[0]]:
        advice.append("Later injections adapt less: inject as early as possible.")
    elif len(points) > 1 and scores[points[-1]] > scores[points[0]]:
        advice.append("Later injections adapt more: let the model establish its context first.")
    advice.append(f"Optimal injection point: after {optimal} tokens (highest adaptation score).")
    return advice


def problem_report(trace: dict, index: int, model: str, timestamp: str, settings: AdaptationSettings,
                   thresholds: LabelThresholds = LabelThresholds(), problem: dict | None = None) -> dict:
    """The study's per-problem dict for one trace.

    problem: the doc (from lm-eval's logged samples) when available; its original_question /
    alternative_question are the problem texts, otherwise the full prompts are.
    """
    values = doc_metrics(trace, {}, dataclasses.replace(settings, report="full"))  # every per-doc key
    points = trace["settings"]["injection_points"]
    token_analysis, attention_analysis, scores = {}, {}, {}
    for point in points:
        name = f"injection_{point}"
        token_analysis[name] = {"summary": _token_summary(trace, point, values, settings, thresholds)}
        attention = _attention(values, point)
        if attention is not None:
            attention_analysis[name] = attention
        if f"adaptation_score@{point}" in values:
            scores[point] = values[f"adaptation_score@{point}"]
    mean_adaptation = float(np.mean(list(scores.values()))) if scores else None
    optimal = max(scores, key=lambda point: (scores[point], -point)) if scores else None
    recommendations = _recommendations(mean_adaptation, scores, optimal, thresholds)
    problem = problem or {}
    prompts = trace["prompts"]
    return {
        "problem_index": index,
        "doc_id": trace["doc_id"],
        "original_problem": problem.get("original_question", prompts["original"]["text"]),
        "alternative_problem": problem.get("alternative_question", prompts["alternative"]["text"]),
        "timestamp": timestamp,
        "model": model,
        "token_analysis": token_analysis,
        "attention_analysis": attention_analysis,
        "causal_analysis": {"overall": {"mean_adaptation": mean_adaptation, "optimal_injection": optimal},
                            "recommendations": recommendations},
        "unified_summary": _unified_summary(token_analysis, attention_analysis, recommendations),
    }


def _unified_summary(token_analysis: dict, attention_analysis: dict, recommendations: list[str]) -> dict:
    """Best assessment over the injection points (earliest point on ties); adaptation_detected when
    it is excellent, good or slow, and only then a best_injection_point, as in the study."""
    assessed = [(ASSESSMENTS.index(entry["summary"]["assessment"]), name)
                for name, entry in token_analysis.items() if entry["summary"]["assessment"] in ASSESSMENTS]
    best = min(assessed, key=lambda item: item[0]) if assessed else None
    quality = ASSESSMENTS[best[0]] if best else "unknown"
    detected = quality in ADAPTED_ASSESSMENTS
    findings = []
    if detected:
        findings.append(f"Token-level: {quality} adaptation at {best[1]}")
    stabilized = [entry["stabilization_tokens"] for entry in attention_analysis.values()
                  if entry["stabilization_tokens"] is not None]
    if stabilized:
        findings.append(f"Attention: stabilizes after ~{np.mean(stabilized):.1f} tokens")
    findings += [f"Recommendation: {text}" for text in recommendations[:2]]
    return {"adaptation_detected": detected, "adaptation_quality": quality,
            "best_injection_point": best[1] if detected else None, "key_findings": findings}


def iso_timestamp(date_id: str) -> str:
    """lm-eval's file date (``2026-11-29T02-24-12.900151``) as ISO 8601."""
    try:
        return datetime.strptime(date_id, "%Y-%m-%dT%H-%M-%S.%f").isoformat()
    except ValueError:
        return date_id


def problem_reports(run, task: str, thresholds: LabelThresholds = LabelThresholds()) -> list[dict]:
    """One dict per doc of `task` in the run.

    problem_index: lm-eval's doc index when the run logged samples (--log_samples), else the
    order in which the run wrote the traces. Metric settings: the task's own (metadata.adaptation
    in the results JSON), so the values match the run's per-doc metrics.
    """
    config = run.results.get("configs", {}).get(task, {})
    settings = AdaptationSettings.from_mapping((config.get("metadata") or {}).get("adaptation"))
    docs = {str(sample["doc"].get("id")): (sample["doc_id"], sample["doc"]) for sample in run.samples(task)
            if isinstance(sample.get("doc"), dict)}
    reports = []
    for order, trace in enumerate(run.traces(task)):
        index, doc = docs.get(trace["doc_id"], (order, None))
        reports.append(problem_report(trace, index, run.model_name, iso_timestamp(run.date_id), settings,
                                      thresholds, doc))
    return reports
