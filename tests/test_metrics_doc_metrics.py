"""doc_metrics on hand-built traces with known answers, degenerate and censored cases."""

import json

import numpy as np
import pytest

from kvinject.metrics import AdaptationSettings, doc_metrics, result_keys
from helpers import build_answers, build_trace, run_series

SETTINGS = AdaptationSettings(window_tokens=2, per_layer=True)

# The injection run: a_t = [0.25, 0.5, 0.75, 0.75], r_t = [-1, 0, 0.5, 1.5],
# sink-excluded attention injected [0.1, 0.2, 0.5, 0.6] (layer 1 is 0.05 lower, layer 2 higher),
# original [0.6, 0.5, 0.2, 0.2], hidden cosines to the new context per layer.
INJECTED = np.array([0.1, 0.2, 0.5, 0.6])
INJECTION = run_series(
    [1, 1, 3, 3], [3, 1, 1, 1], logp_new=[-2, -1, -0.5, -0.5], logp_old=[-1, -1, -1, -2],
    injected_mass=np.stack([INJECTED - 0.05, INJECTED + 0.05], axis=1),
    original_mass=[0.6, 0.5, 0.2, 0.2],
    hidden_cos_new=[[0.1, 0.2], [0.2, 0.3], [0.5, 0.6], [0.7, 0.8]])
# The noise run: a_t = 0.5 throughout, 0.1 of the attention on its own injected segment.
NOISE = run_series([1, 1, 1, 1], [1, 1, 1, 1], injected_mass=0.1, original_mass=0.6)


def _metrics(runs=None, settings=SETTINGS, answers=None, **trace_options):
    runs = runs or {5: (INJECTION, NOISE)}
    trace = build_trace(runs, **trace_options)
    return doc_metrics(trace, answers or build_answers(list(runs)), settings)


def test_every_metric_of_a_hand_built_trace():
    values = _metrics()
    expected = {
        "baseline_accuracy": 1.0, "oracle_accuracy": 1.0,
        "adaptation_score@5": 0.5625, "oracle_convergence@5": 0.75, "final_log_ratio@5": 1.0,
        "attention_injected@5": 0.35, "attention_original@5": 0.375,
        "attention_shift@5": 0.25, "final_attention_ratio@5": 2.75,
        "embedding_similarity@5": 0.7,
        "attention_injected_layer1@5": 0.30, "attention_injected_layer2@5": 0.40,
        "attention_original_layer2@5": 0.375,
        "embedding_similarity_layer1@5": 0.6, "embedding_similarity_layer2@5": 0.7,
        "injection_accuracy@5": 1.0, "stuck_rate@5": 0.0, "adaptation_gap@5": 0.0,
        "noise_specificity@5": 1.0,
    }
    for key, value in expected.items():
        assert values[key] == pytest.approx(value), key
    assert values["adaptation_point@5"] == {"time": 3, "observed": True}   # 0.5 is not > 0.5
    assert values["stabilization@5"] == {"time": 3, "observed": True}
    assert values["attention_stabilization@5"] == {"time": 3, "observed": True}
    assert values["detection_latency@5"] == {"run": [1.0, 1.0, 3.0, 3.0],
                                             "noise": [1.0, 1.0, 1.0, 1.0]}


def test_derived_keys_carry_the_metrics_per_doc_value():
    values = _metrics()
    assert values["oracle_convergence_ci_low@5"] == values["oracle_convergence@5"]
    assert values["stabilization_censored@5"] == values["stabilization@5"]
    assert values["detection_rate_ci_high@5"] == values["detection_latency@5"]


def test_paired_values_for_the_tests_cover_the_whole_family():
    values = _metrics()
    payload = values["pvalue_oracle_convergence@5"]
    assert payload == values["pvalue_embedding_similarity@5"]
    assert payload["oracle_convergence@5"] == pytest.approx([0.75, 0.5])
    assert payload["attention_injected@5"] == pytest.approx([0.35, 0.1])
    assert payload["injection_accuracy@5"] == [1.0, 0.0]
    assert "stuck_rate@5" not in payload   # not a paired metric


def test_values_are_json_serialisable_and_keys_are_catalogued():
    values = _metrics()
    assert json.loads(json.dumps(values, allow_nan=False)) == values
    assert set(values) <= set(result_keys([5], SETTINGS, n_layers=2))


def test_doc_not_injected_at_a_point_gives_no_value_there():
    values = _metrics({5: (INJECTION, NOISE), 10: (None, None)})
    at_10 = {key for key in values if key.endswith("@10")}
    assert at_10 and all(key.startswith("pvalue_") for key in at_10)
    assert values["pvalue_adaptation_score@10"] == values["pvalue_adaptation_score@5"]


def test_identical_problem_control_gives_only_baseline_and_false_positive_values():
    values = _metrics(control=True)
    assert values["control_false_positive_rate@5"] == _metrics()["detection_latency@5"]
    assert {key.split("@")[0].replace("_ci_low", "").replace("_ci_high", "")
            for key in values} == {"baseline_accuracy", "control_false_positive_rate"}


def test_zero_length_window_is_censored_at_zero_and_has_no_window_means():
    empty = run_series([])
    values = _metrics({5: (empty, empty)})
    for metric in ("adaptation_point", "stabilization", "attention_stabilization"):
        assert values[f"{metric}@5"] == {"time": 0, "observed": False}
    for metric in ("adaptation_score", "oracle_convergence", "final_log_ratio",
                   "attention_injected", "embedding_similarity", "attention_shift"):
        assert f"{metric}@5" not in values
    assert values["detection_latency@5"]["run"] == []
    assert values["pvalue_oracle_convergence@5"] == {"injection_accuracy@5": [1.0, 0.0]}


def test_identical_distributions_never_adapt():
    same = run_series([0.0, 0.7, 2.0], [0.0, 0.7, 2.0])
    values = _metrics({5: (same, same)})
    assert values["adaptation_score@5"] == 0.5 and values["oracle_convergence@5"] == 0.5
    assert values["adaptation_point@5"] == {"time": 3, "observed": False}
    assert values["stabilization@5"] == {"time": 3, "observed": False}


def test_stabilization_for_k_tokens_is_configurable():
    flapping = run_series([3, 1, 3, 3, 1], [1, 3, 1, 1, 3])   # adapted at t = 1, 3, 4
    assert _metrics({5: (flapping, NOISE)})["stabilization@5"]["observed"] is False
    settings = AdaptationSettings(stabilization_tokens=2)
    assert _metrics({5: (flapping, NOISE)}, settings)["stabilization@5"] == {
        "time": 3, "observed": True}
    stricter = AdaptationSettings(adapted_threshold=0.8)   # a_t = 0.75 is not adapted
    assert _metrics({5: (flapping, NOISE)}, stricter)["adaptation_point@5"]["observed"] is False


def test_untracked_attention_and_hidden_states_give_no_such_keys():
    plain = run_series([1, 2], track_attention=False, track_hidden=False)
    values = _metrics({5: (plain, plain)}, track_attention=False, track_hidden=False)
    assert not any(key.startswith(("attention", "embedding", "final_attention",
                                   "pvalue_attention", "pvalue_embedding",
                                   "pvalue_final_attention")) for key in values)
    assert "pvalue_oracle_convergence@5" in values


def test_replaced_prompt_has_no_attention_ratio_but_stabilizes_at_once():
    # strategy=replace: the prompt region is the new prompt, reported as "injected"
    replaced = run_series([1, 2], injected_mass=0.7, original_mass=0.0)
    values = _metrics({5: (replaced, NOISE)})
    assert "final_attention_ratio@5" not in values
    assert values["attention_stabilization@5"] == {"time": 1, "observed": True}


def test_answers_drive_the_accuracy_metrics():
    answers = build_answers([5], baseline_old=False, oracle_new=True, injection=(False, True),
                            noise=(False, False))
    values = _metrics(answers=answers)
    assert (values["baseline_accuracy"], values["injection_accuracy@5"], values["stuck_rate@5"],
            values["adaptation_gap@5"], values["noise_specificity@5"]) == (0.0, 0.0, 1.0, 1.0, 0.0)
    del answers["noise@5"]
    values = _metrics(answers=answers)
    assert "noise_specificity@5" not in values and "injection_accuracy@5" not in values[
        "pvalue_adaptation_score@5"]


def test_optional_key_groups_can_be_switched_off():
    settings = AdaptationSettings(per_layer=False, confidence_intervals=False)
    values = _metrics(settings=settings)
    assert not any("_layer" in key or "_ci_" in key for key in values)
    assert "stabilization_censored@5" in values


def test_log_ratio_detection_statistic_changes_the_payload():
    settings = AdaptationSettings(detection_statistic="log_ratio")
    assert _metrics(settings=settings)["detection_latency@5"]["run"] == [-1.0, 0.0, 0.5, 1.5]


def test_malformed_traces_are_reported_with_the_doc_id():
    trace = build_trace({5: (INJECTION, NOISE)}, doc_id="gsm-17")
    trace["conditions"]["injection@5"]["series"]["kl_run_new"].pop()
    with pytest.raises(ValueError, match="gsm-17.*kl_run_new"):
        doc_metrics(trace, build_answers([5]), SETTINGS)
    trace["schema_version"] = 2
    with pytest.raises(ValueError, match="gsm-17.*schema_version"):
        doc_metrics(trace, build_answers([5]), SETTINGS)
    nan_trace = build_trace({5: (run_series([1.0]), NOISE)}, doc_id="gsm-18")
    nan_trace["conditions"]["injection@5"]["series"]["kl_run_old"][0] = float("nan")  # the builder refuses NaN
    with pytest.raises(ValueError, match="gsm-18.*NaN"):
        doc_metrics(nan_trace, build_answers([5]), SETTINGS)
