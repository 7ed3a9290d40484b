"""doc_metrics: the per-doc values of every result key, from one schema-v1 trace.

Everything here needs one document only; what needs all documents (calibration, Kaplan-Meier,
intervals, tests) happens in the aggregations, so some per-doc values are small payloads that
carry what their aggregation needs (see keys.py and aggregations.py). All values are
JSON-serialisable (lm-eval writes them to --log_samples).

Which docs contribute what:
- changed-problem docs give every key; n_docs@N counts them, so every @N accuracy, gap and mean
  has the same denominator (minus docs whose inputs are absent, e.g. no answer).
- identical-problem controls (original and alternative prompt ids equal) give only the detection
  keys and adaptation_point_vs_controls_pvalue: their noise runs join the calibration and their
  injection runs are the control false positives; the adaptation metrics would be 0.5 or
  undefined for them.
- every doc carries the detection payload under every detection key, so each detection key is
  computed by the same detector, calibrated on the noise runs of every doc.
- a doc not injected at N (the baseline stopped before N tokens) gives no value for N.
- a metric whose inputs are absent (attention or hidden states not tracked, no answer for a
  condition, an empty post-injection window for a window mean) gives no value.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kvinject.trace_schema import SCHEMA_VERSION

from . import keys as K
from .events import CENSORED, EVENT, first_time, stabilization_time
from .series import adaptation_scores, adapted_tokens, clamped_cosines, final_window, log_ratios, non_sink_masses
from .settings import AdaptationSettings, min_kl_gap

BUDGET_STOP = "max_new_tokens"   # the only stop_reason that censors (see events.py)


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
    # The adapted rule's minimum effect respects the precision the trace was computed in.
    settings = dataclasses.replace(settings, adapted_min_kl_gap=min_kl_gap(settings, trace["settings"]))
    prompts = trace["prompts"]
    control = prompts["original"]["ids"] == prompts["alternative"]["ids"]
    values: dict = {}
    if not control:
        _put(values, "baseline_accuracy", None, _matches(answers, "baseline", "old"), settings)
        _put(values, "oracle_accuracy", None, _matches(answers, "oracle", "new"), settings)
    pairs: dict[str, list[float]] = {}
    for point in trace["settings"]["injection_points"]:
        run, noise = (trace["conditions"].get(f"{name}@{point}") for name in ("injection", "noise"))
        if not (run and noise and run["injected"] and noise["injected"]):
            continue
        detection = _detection_payload(run, noise, control, settings)
        for metric, spec in K.METRICS.items():
            if spec.kind == K.DETECTION:
                _put(values, metric, point, detection, settings)
        run_metrics = _run_metrics(run, settings)
        # Computed from the control's own run, not assumed: with identical contexts a_t is 0.5
        # and the KL gap 0, so a control that "adapts" would show a fault in the instrument.
        _put(values, "adaptation_point_vs_controls_pvalue", point,
             {"run": run_metrics[0]["adaptation_point"], "control": control}, settings)
        if control:
            _put(values, "n_controls", point, 1.0, settings)
            _put(values, "kl_noise_floor", point, _kl_gap_bound(run, noise), settings)
        else:
            pairs.update(_adaptation_values(values, run_metrics, noise, answers, point, settings))
    if settings.report == "full":
        # A doc carries pvalue_<metric>@N for each pair it has; the payload is its whole family
        # so each p-value aggregation can correct across the family (aggregations.py).
        for key in pairs:   # pair keys are "<metric>@<N>"
            metric, _, point = key.partition("@")
            values[K.format_key(metric, int(point), K.PVALUE)] = pairs
    return values


def _adaptation_values(values: dict, run_metrics: tuple[dict, dict], noise: dict, answers: dict,
                       point: int, settings: AdaptationSettings) -> dict[str, list[float]]:
    """Store the injection run's metrics (its _run_metrics) at `point` in values; return the
    (injection, noise) pairs of the paired metrics, keyed `<metric>@<N>`."""
    run_values, run_layers = dict(run_metrics[0]), run_metrics[1]
    noise_values, _ = _run_metrics(noise, settings)
    run_values.update(_answer_metrics(answers, point))
    noise_values["injection_accuracy"] = _matches(answers, f"noise@{point}", "new")
    if "attention_injected" in run_values and "attention_injected" in noise_values:
        run_values["attention_shift"] = (
            run_values["attention_injected"] - noise_values["attention_injected"])
    _put(values, "n_docs", point, 1.0, settings)
    pairs = {}
    for metric, value in run_values.items():
        spec = K.METRICS[metric]
        noise_value = noise_values.get(metric)
        if spec.kind == K.TIME_TO_EVENT:
            _put(values, metric, point, {"run": value, "noise": noise_value}, settings)
            pair = [_within(value, settings.horizon_tokens), _within(noise_value, settings.horizon_tokens)]
        else:
            _put(values, metric, point, value, settings)
            pair = [value, noise_value]
        if spec.paired_test and None not in pair:
            pairs[K.format_key(metric, point)] = pair
    if settings.per_layer and settings.report == "full":
        for metric, per_layer in run_layers.items():
            for layer, value in enumerate(per_layer, start=1):
                values[K.format_key(metric, point, layer=layer)] = value
    return pairs


def _within(event: dict | None, horizon: int) -> float | None:
    """1.0 / 0.0: the event happened at t <= horizon; None: unknown (censored before horizon)."""
    if event is None:
        return None
    if event["status"] == EVENT:
        return float(event["time"] <= horizon)
    if event["status"] == CENSORED and event["time"] < horizon:
        return None
    return 0.0


def _put(values: dict, metric: str, point: int | None, value, settings) -> None:
    """Store a per-doc value under the metric's keys that the report shows."""
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


def _checked_series(condition: dict) -> dict:
    series = condition["series"]
    length = len(condition["post_ids"])
    for name, values in series.items():
        if name != "attention" and len(values) != length:
            raise ValueError(f"series {name!r} has {len(values)} entries for {length} post_ids")
    return series


def _statistic(condition: dict, settings: AdaptationSettings) -> list[float]:
    """The run's detection statistic over the horizon, to 7 significant digits: the engine's
    divergences are fp32 (about 7 digits), and the series is repeated under several keys."""
    series = _checked_series(condition)
    if settings.detection_statistic == "log_ratio":
        statistic = log_ratios(series["logp_new"], series["logp_old"])
    else:
        statistic = np.asarray(series["kl_run_old"], dtype=float)
    return [float(f"{value:.7g}") for value in statistic[:settings.horizon_tokens]]


def _detection_payload(run: dict, noise: dict, control: bool, settings) -> dict:
    return {"run": _statistic(run, settings), "noise": _statistic(noise, settings),
            "run_budget_hit": run["stop_reason"] == BUDGET_STOP,
            "noise_budget_hit": noise["stop_reason"] == BUDGET_STOP, "control": control}


def _kl_gap_bound(*runs: dict) -> float | None:
    """The largest |KL(run||old) - KL(run||new)| over the runs' tokens (None: no token). For an
    identical control old and new are the same tokens, so this is rounding: kl_noise_floor."""
    gaps = [np.abs(np.asarray(r["series"]["kl_run_old"], dtype=float) - np.asarray(r["series"]["kl_run_new"], dtype=float))
            for r in runs]
    gaps = np.concatenate(gaps)
    return float(gaps.max()) if gaps.size else None


def _run_metrics(condition: dict, settings: AdaptationSettings) -> tuple[dict, dict]:
    """One run's metric values {metric: float | event} and per-layer values {metric: [float]}."""
    series = _checked_series(condition)
    window, horizon = settings.window_tokens, settings.horizon_tokens
    budget_hit = condition["stop_reason"] == BUDGET_STOP
    kl_old = np.asarray(series["kl_run_old"], dtype=float)
    kl_new = np.asarray(series["kl_run_new"], dtype=float)
    scores = adaptation_scores(kl_old, kl_new)
    adapted = adapted_tokens(kl_old, kl_new, settings.adapted_threshold, settings.adapted_min_kl_gap)
    values = {
        "adaptation_point": first_time(adapted, budget_hit),
        "stabilization": stabilization_time(adapted, settings.stabilization_tokens, budget_hit),
    }
    layers = {}
    if scores.size:
        values["adaptation_score"] = float(scores.mean())
        values["oracle_convergence"] = float(final_window(scores, window).mean())
        ratios = log_ratios(series["logp_new"], series["logp_old"])
        values["final_log_ratio"] = float(final_window(ratios, window).mean())
        values["kl_run_new"] = float(np.clip(kl_new[:horizon], 0, None).mean())
        values["kl_run_old"] = float(np.clip(kl_old[:horizon], 0, None).mean())
    if "attention" in series:
        attention_values, layers = _attention_metrics(series["attention"], budget_hit, settings)
        values.update(attention_values)
    if "hidden_cos_new" in series and scores.size:
        cos_new = final_window(clamped_cosines(series["hidden_cos_new"]), window).mean(axis=0)
        cos_old = final_window(clamped_cosines(series["hidden_cos_old"]), window).mean(axis=0)
        contrast = cos_new - cos_old
        values["embedding_similarity"] = float(cos_new[-1])
        values["embedding_contrast"] = float(contrast[-1])
        values["embedding_contrast_mid"] = float(contrast[(contrast.size - 1) // 2])
        layers["embedding_similarity"] = cos_new.tolist()
    return values, layers


def _attention_metrics(attention: dict, budget_hit: bool,
                       settings: AdaptationSettings) -> tuple[dict, dict]:
    if not attention["injected"]:   # empty window: no token to attend from
        return {"attention_stabilization": first_time([], budget_hit)}, {}
    masses = non_sink_masses(attention)
    injected, original = masses["injected"], masses["original_prompt"]   # (T, n_layers)
    injected_by_token, original_by_token = injected.mean(axis=-1), original.mean(axis=-1)
    values = {
        # "injected/original > threshold", written without the division: with strategy=replace
        # the original-prompt mass is 0 and the ratio is infinite.
        "attention_stabilization": stabilization_time(
            injected_by_token > settings.attention_ratio_threshold * original_by_token,
            settings.stabilization_tokens, budget_hit),
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
