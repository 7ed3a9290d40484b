"""doc_metrics: the per-doc values of every result key, from one schema-v1 trace.

Everything here needs one document only; what needs all documents (calibration, medians,
intervals, tests) happens in the aggregations, so some per-doc values are small payloads that
carry what their aggregation needs (see keys.py and aggregations.py). All values are
JSON-serialisable (lm-eval writes them to --log_samples).

Which docs contribute what:
- identical-problem controls (original and alternative prompt ids equal) give baseline_accuracy
  and control_false_positive_rate@N only: the adaptation metrics would be 0.5 or undefined for
  them. Changed-problem docs give every other key.
- the detection keys carry the CUSUM statistic of the injection and the noise run, so that their
  aggregation can calibrate on the noise runs of every doc carrying the key.
- a doc not injected at N (the baseline stopped before N tokens) gives no value for N.
- a metric whose inputs are absent (attention or hidden states not tracked, no answer for a
  condition, an empty post-injection window for a window mean) gives no value.
"""

from __future__ import annotations

import numpy as np

from . import keys as K
from .events import first_time, stabilization_time
from .series import adaptation_scores, final_window, log_ratios, non_sink_masses
from .settings import AdaptationSettings

SCHEMA_VERSION = 1


def doc_metrics(trace: dict, answers: dict, settings: AdaptationSettings | None = None) -> dict:
    """Per-doc values keyed `<metric>@<N>` (and derived keys), see keys.METRICS.

    trace: one schema-v1 trace (docs/architecture.md section 3).
    answers: {condition name: {"answer": str | None, "new": bool, "old": bool}}, where "new" /
        "old" say whether the condition's answer matches the alternative / original gold answer.
    """
    settings = settings or AdaptationSettings()
    doc_id = trace.get("doc_id", "<no doc_id>")
    if trace.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"doc {doc_id}: trace schema_version {trace.get('schema_version')!r}, "
                         f"expected {SCHEMA_VERSION}")
    try:
        return _doc_metrics(trace, answers, settings)
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"doc {doc_id}: cannot compute adaptation metrics: {error!r}") from error


def _doc_metrics(trace: dict, answers: dict, settings: AdaptationSettings) -> dict:
    prompts = trace["prompts"]
    control = prompts["original"]["ids"] == prompts["alternative"]["ids"]
    injection_points = trace["settings"]["injection_points"]
    values: dict = {}
    _put(values, "baseline_accuracy", None, _matches(answers, "baseline", "old"), settings)
    if not control:
        _put(values, "oracle_accuracy", None, _matches(answers, "oracle", "new"), settings)
    paired: dict[str, list[float]] = {}
    for point in injection_points:
        run, noise = (trace["conditions"].get(f"{name}@{point}") for name in ("injection", "noise"))
        if not (run and noise and run["injected"] and noise["injected"]):
            continue
        detection = {"run": _detection_statistic(run, settings),
                     "noise": _detection_statistic(noise, settings)}
        for metric, spec in K.METRICS.items():
            if spec.kind == K.DETECTION and spec.from_controls == control:
                _put(values, metric, point, detection, settings)
        if not control:
            paired.update(_adaptation_values(values, run, noise, answers, point, settings))
    if not control:
        # Every changed-problem doc carries every p-value key with the same payload, so each
        # p-value aggregation sees the whole family (metrics x N) and corrects it identically.
        for metric in _testable_metrics(trace["settings"]):
            for point in injection_points:
                values[K.format_key(metric, point, K.PVALUE)] = paired
    return values


def _adaptation_values(values: dict, run: dict, noise: dict, answers: dict, point: int,
                       settings: AdaptationSettings) -> dict[str, list[float]]:
    """Store the injection run's metrics at `point` in values; return the (injection, noise)
    pairs of the paired metrics, keyed `<metric>@<N>`."""
    run_values, run_layers = _run_metrics(run, settings)
    noise_values, _ = _run_metrics(noise, settings)
    run_values.update(_answer_metrics(answers, point))
    noise_values["injection_accuracy"] = _matches(answers, f"noise@{point}", "new")
    if "attention_injected" in run_values and "attention_injected" in noise_values:
        run_values["attention_shift"] = (
            run_values["attention_injected"] - noise_values["attention_injected"])
    pairs = {}
    for metric, value in run_values.items():
        _put(values, metric, point, value, settings)
        noise_value = noise_values.get(metric)
        if K.METRICS[metric].paired_test and None not in (value, noise_value):
            pairs[K.format_key(metric, point)] = [value, noise_value]
    if settings.per_layer:
        for metric, per_layer in run_layers.items():
            for layer, value in enumerate(per_layer, start=1):
                values[K.format_key(metric, point, layer=layer)] = value
    return pairs


def _put(values: dict, metric: str, point: int | None, value, settings) -> None:
    """Store a per-doc value under the metric's key and the derived keys that share it."""
    if value is None:
        return
    for key in K.carrier_keys(metric, point, settings):
        values[key] = value


def _matches(answers: dict, condition: str, gold: str) -> float | None:
    """1.0 / 0.0: the condition's answer matches that gold answer; None: no answer recorded."""
    answer = answers.get(condition)
    return None if answer is None else float(bool(answer[gold]))


def _answer_metrics(answers: dict, point: int) -> dict:
    injection_new = _matches(answers, f"injection@{point}", "new")
    oracle_new = _matches(answers, "oracle", "new")
    return {
        "injection_accuracy": injection_new,
        "stuck_rate": _matches(answers, f"injection@{point}", "old"),
        "adaptation_gap": None if None in (injection_new, oracle_new)
        else oracle_new - injection_new,
        "noise_specificity": _matches(answers, f"noise@{point}", "old"),
    }


def _testable_metrics(trace_settings: dict) -> list[str]:
    needs = {"attention_injected": "track_attention", "final_attention_ratio": "track_attention",
             "embedding_similarity": "track_hidden"}
    return [metric for metric in K.PAIRED_METRICS
            if metric not in needs or trace_settings.get(needs[metric], False)]


def _checked_series(condition: dict) -> dict:
    series = condition["series"]
    length = len(condition["post_ids"])
    for name, values in series.items():
        if name != "attention" and len(values) != length:
            raise ValueError(f"series {name!r} has {len(values)} entries for {length} post_ids")
    return series


def _detection_statistic(condition: dict, settings: AdaptationSettings) -> list[float]:
    """The run's CUSUM statistic per token, to 7 significant digits: the engine's divergences are
    fp32 (about 7 digits), and the series is repeated under several keys in --log_samples."""
    series = _checked_series(condition)
    if settings.detection_statistic == "log_ratio":
        statistic = log_ratios(series["logp_new"], series["logp_old"])
    else:
        statistic = np.asarray(series["kl_run_old"], dtype=float)
    return [float(f"{value:.7g}") for value in statistic]


def _run_metrics(condition: dict, settings: AdaptationSettings) -> tuple[dict, dict]:
    """One run's metric values {metric: float | event} and per-layer values {metric: [float]}."""
    series = _checked_series(condition)
    window = settings.window_tokens
    scores = adaptation_scores(series["kl_run_old"], series["kl_run_new"])
    adapted = scores > settings.adapted_threshold
    values = {
        "adaptation_point": first_time(adapted),
        "stabilization": stabilization_time(adapted, settings.stabilization_tokens),
    }
    layers = {}
    if scores.size:
        values["adaptation_score"] = float(scores.mean())
        values["oracle_convergence"] = float(final_window(scores, window).mean())
        ratios = log_ratios(series["logp_new"], series["logp_old"])
        values["final_log_ratio"] = float(final_window(ratios, window).mean())
    if "attention" in series and scores.size:
        attention_values, layers = _attention_metrics(series["attention"], settings)
        values.update(attention_values)
    elif "attention" in series:
        values["attention_stabilization"] = first_time([])   # empty window: censored at 0
    if "hidden_cos_new" in series and scores.size:
        cosines = final_window(np.asarray(series["hidden_cos_new"], dtype=float), window)
        per_layer = cosines.mean(axis=0)
        values["embedding_similarity"] = float(per_layer[-1])
        layers["embedding_similarity"] = per_layer.tolist()
    return values, layers


def _attention_metrics(attention: dict, settings: AdaptationSettings) -> tuple[dict, dict]:
    masses = non_sink_masses(attention)
    injected, original = masses["injected"], masses["original_prompt"]   # (T, n_layers)
    injected_by_token, original_by_token = injected.mean(axis=-1), original.mean(axis=-1)
    values = {
        # "injected/original > threshold", written without the division: with strategy=replace
        # the original-prompt mass is 0 and the ratio is infinite.
        "attention_stabilization": stabilization_time(
            injected_by_token > settings.attention_ratio_threshold * original_by_token,
            settings.stabilization_tokens),
        "attention_injected": float(injected_by_token.mean()),
        "attention_original": float(original_by_token.mean()),
    }
    final_original = final_window(original_by_token, settings.window_tokens).mean()
    if final_original > 0:   # undefined when the original prompt gets no attention (replace)
        final_injected = final_window(injected_by_token, settings.window_tokens).mean()
        values["final_attention_ratio"] = float(final_injected / final_original)
    layers = {"attention_injected": injected.mean(axis=0).tolist(),
              "attention_original": original.mean(axis=0).tolist()}
    return values, layers
