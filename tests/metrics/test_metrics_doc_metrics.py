"""doc_metrics on hand-built traces with known answers, degenerate and censored cases."""

import json

import numpy as np
import pytest
from helpers import build_answers, build_trace, run_series

from kvinject.metrics import AdaptationSettings, doc_metrics, result_keys
from kvinject.metrics import keys as K

# The hand-built runs have a_t = 0.75 where they adapt: they are read at the threshold 0.5.
SETTINGS = AdaptationSettings(adapted_threshold=0.5, window_tokens=2, per_layer=True, report="full")
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
        "baseline_accuracy": 1.0, "oracle_accuracy": 1.0, "n_docs@5": 1.0,
        "adaptation_score@5": 0.5625, "oracle_convergence@5": 0.75, "final_log_ratio@5": 1.0,
        "kl_run_new@5": 1.5, "kl_run_old@5": 2.0,
        "attention_injected@5": 0.35, "attention_original@5": 0.375,
        "attention_shift@5": 0.25, "final_attention_ratio@5": 2.75,
        "embedding_similarity@5": 0.7, "embedding_contrast@5": 0.4,
        "embedding_contrast_mid@5": 0.2,
        "attention_injected_layer1@5": 0.30, "attention_injected_layer2@5": 0.40,
        "attention_original_layer2@5": 0.375,
        "embedding_similarity_layer1@5": 0.6, "embedding_similarity_layer2@5": 0.7,
        "injection_accuracy@5": 1.0, "stuck_rate@5": 0.0, "adaptation_gap@5": 0.0,
        "noise_specificity@5": 1.0,
    }
    for key, value in expected.items():
        assert values[key] == pytest.approx(value), key
    never_adapts = {"time": 4, "status": "censored"}   # the noise run: a_t = 0.5, budget hit
    # a_t = 0.5 at t = 2 is not > 0.5: adapted from t = 3
    assert values["adaptation_point_share@5"] == {"run": {"time": 3, "status": "event"},
                                                  "noise": never_adapts}
    assert values["stabilization_median@5"]["run"] == {"time": 3, "status": "event"}
    assert values["attention_stabilization_never@5"]["run"] == {"time": 3, "status": "event"}
    assert values["detection_rate@5"] == {"run": [1.0, 1.0, 3.0, 3.0], "noise": [1.0, 1.0, 1.0, 1.0],
                                          "run_budget_hit": True, "noise_budget_hit": True,
                                          "control": False}


def test_derived_keys_carry_the_metrics_per_doc_value():
    values = _metrics()
    assert values["oracle_convergence_ci_low@5"] == values["oracle_convergence@5"]
    assert values["stabilization_censored@5"] == values["stabilization_share@5"]
    assert values["detection_rate_ci_high@5"] == values["detection_latency_median@5"]
    assert values["control_false_positive_rate@5"] == values["detection_rate@5"]


def test_paired_values_for_the_tests_cover_the_whole_family():
    values = _metrics()
    payload = values["pvalue_oracle_convergence@5"]
    assert payload == values["pvalue_embedding_similarity@5"]
    assert payload["oracle_convergence@5"] == pytest.approx([0.75, 0.5])
    assert payload["attention_injected@5"] == pytest.approx([0.35, 0.1])
    assert payload["injection_accuracy@5"] == [1.0, 0.0]
    assert "adaptation_point@5" not in payload   # the noise run was censored before H
    stopped_noise = _metrics(stop_reasons=("max_new_tokens", "eos"))["pvalue_kl_run_new@5"]
    assert stopped_noise["adaptation_point@5"] == [1.0, 0.0]   # adapted within H: inj vs noise
    assert "stuck_rate@5" not in payload   # not a paired metric


def test_detection_rate_has_no_paired_test_of_its_own():
    """Its former pvalue_detection_rate@N tested the mean detection statistic, with the default
    statistic the same test as pvalue_kl_run_old@N: one test counted twice in the Holm family.
    The detector's own test against the noise runs is detection_latency_vs_noise_pvalue@N."""
    values = _metrics()
    assert "pvalue_detection_rate@5" not in values
    assert "detection_rate@5" not in values["pvalue_kl_run_old@5"]
    assert "kl_run_old@5" in values["pvalue_kl_run_old@5"]
    assert "pvalue_detection_rate@5" not in result_keys([5], SETTINGS)
    with pytest.raises(ValueError, match="has no paired test"):
        K.parse_key("pvalue_detection_rate@5")


def test_a_pair_censored_before_the_horizon_is_left_out_of_the_test():
    values = _metrics(settings=AdaptationSettings(adapted_threshold=0.5, report="full", horizon_tokens=10))
    assert "adaptation_point@5" not in values["pvalue_oracle_convergence@5"]   # noise censored at 4
    assert "pvalue_adaptation_point@5" not in values                         # no pair: no key
    stopped = _metrics(settings=AdaptationSettings(adapted_threshold=0.5, report="full", horizon_tokens=10),
                       stop_reasons=("eos", "eos"))
    assert stopped["pvalue_adaptation_point@5"]["adaptation_point@5"] == [1.0, 0.0]


def test_values_are_json_serialisable_and_keys_are_catalogued():
    values = _metrics()
    assert json.loads(json.dumps(values, allow_nan=False)) == values
    assert set(values) <= set(result_keys([5], SETTINGS, n_layers=2))


def test_the_headline_report_emits_only_headline_keys():
    values = _metrics(settings=AdaptationSettings(adapted_threshold=0.5))
    assert set(values) == {"baseline_accuracy", "oracle_accuracy", "n_docs@5",
                           "injection_accuracy@5", "adaptation_gap@5", "adaptation_point_share@5",
                           "adaptation_point_vs_noise@5",
                           "detection_rate@5", "detection_calibrated@5", "kl_run_new@5",
                           "embedding_contrast@5"}


def test_doc_not_injected_at_a_point_gives_no_value_there():
    values = _metrics({5: (INJECTION, NOISE), 10: (None, None)})
    assert not any(key.endswith("@10") for key in values)


def test_identical_problem_control_gives_only_detection_values_and_its_adaptation():
    values = _metrics(control=True)
    # computed from the control's own series (the helper gives it the changed doc's series)
    assert values["adaptation_point_vs_controls_pvalue@5"] == {
        "run": {"time": 3, "status": "event"}, "control": True}
    assert values["control_false_positive_rate@5"] == dict(_metrics()["detection_rate@5"], control=True)
    assert values["kl_noise_floor@5"] == 2.0  # max |KL_old - KL_new| over both runs: |1 - 3| of the injection run
    assert {key.split("@")[0] for key in values} == {
        f"{metric}{stat}" for metric, stat in (
            ("n_controls", ""), ("kl_noise_floor", ""), ("detection_rate", ""), ("detection_rate", "_ci_low"), ("detection_rate", "_ci_high"),
            ("detection_latency", "_median"), ("detection_latency", "_median_ci_low"),
            ("detection_latency", "_median_ci_high"), ("detection_latency", "_median_reached"),
            ("detection_latency", "_censored"), ("detection_horizon", ""), ("n_undecided", ""),
            ("detection_latency", "_never"), ("detection_false_alarm_bound", ""),
            ("detection_calibrated", ""), ("control_false_positive_rate", ""),
            ("control_false_positive_rate", "_ci_low"), ("control_false_positive_rate", "_ci_high"),
            ("detection_vs_controls_pvalue", ""), ("detection_latency_vs_noise_pvalue", ""),
            ("detection_latency_vs_controls_pvalue", ""), ("adaptation_point_vs_controls_pvalue", ""))}


def test_zero_length_window_has_no_window_means_and_stopped_runs_never_adapt(run_series):
    empty = run_series([])
    values = _metrics({5: (empty, empty)})
    for metric in ("adaptation_point", "stabilization", "attention_stabilization"):
        assert values[f"{metric}_share@5"]["run"] == {"time": 0, "status": "censored"}
    stopped = _metrics({5: (empty, empty)}, stop_reasons=("eos", "stop_sequence"))
    assert stopped["adaptation_point_share@5"] == {"run": {"time": 0, "status": "never"},
                                                   "noise": {"time": 0, "status": "never"}}
    for metric in ("adaptation_score", "oracle_convergence", "final_log_ratio", "kl_run_new",
                   "attention_injected", "embedding_similarity", "attention_shift"):
        assert f"{metric}@5" not in values
    assert values["detection_rate@5"]["run"] == []
    assert "detection_rate@5" not in values["pvalue_injection_accuracy@5"]


def test_identical_distributions_never_adapt(run_series):
    same = run_series([0.0, 0.7, 2.0], [0.0, 0.7, 2.0])
    values = _metrics({5: (same, same)})
    assert values["adaptation_score@5"] == 0.5 and values["oracle_convergence@5"] == 0.5
    assert values["adaptation_point_share@5"]["run"] == {"time": 3, "status": "censored"}
    assert values["stabilization_share@5"]["run"] == {"time": 3, "status": "censored"}


def test_fp32_level_differences_never_count_as_adapted(run_series):
    # a_t = 1.2 / 2.2 > 0.5, but the run is closer to the new context by 2e-8 nats only
    tiny = run_series([1.2e-7] * 6, [1e-7] * 6)
    values = _metrics({5: (tiny, NOISE)})
    assert values["adaptation_point_share@5"]["run"]["status"] != "event"
    assert values["stabilization_share@5"]["run"]["status"] != "event"
    loose = AdaptationSettings(adapted_threshold=0.5, report="full", adapted_min_kl_gap=0.0)
    assert _metrics({5: (tiny, NOISE)}, loose)["adaptation_point_share@5"]["run"]["status"] == "event"


def test_stabilization_for_k_tokens_is_configurable(run_series):
    flapping = run_series([3, 1, 3, 3, 1], [1, 3, 1, 1, 3])   # adapted at t = 1, 3, 4
    assert _metrics({5: (flapping, NOISE)})["stabilization_share@5"]["run"]["status"] == "censored"
    settings = AdaptationSettings(adapted_threshold=0.5, stabilization_tokens=2, report="full")
    assert _metrics({5: (flapping, NOISE)}, settings)["stabilization_share@5"]["run"] == {
        "time": 3, "status": "event"}
    stricter = AdaptationSettings(report="full")   # the default threshold 0.8: a_t = 0.75 is not adapted
    stricter_values = _metrics({5: (flapping, NOISE)}, stricter)
    assert stricter_values["adaptation_point_share@5"]["run"]["status"] == "censored"


def test_untracked_attention_and_hidden_states_give_no_such_keys(run_series):
    plain = run_series([1, 2], track_attention=False, track_hidden=False)
    values = _metrics({5: (plain, plain)}, track_attention=False, track_hidden=False)
    assert not any(key.startswith(("attention", "embedding", "final_attention",
                                   "pvalue_attention", "pvalue_embedding",
                                   "pvalue_final_attention")) for key in values)
    assert "pvalue_oracle_convergence@5" in values


def test_replaced_prompt_has_no_attention_ratio_but_stabilizes_at_once(run_series):
    # strategy=replace: the prompt region is the new prompt, reported as "injected"
    replaced = run_series([1, 2], injected_mass=0.7, original_mass=0.0)
    values = _metrics({5: (replaced, NOISE)})
    assert "final_attention_ratio@5" not in values
    assert values["attention_stabilization_share@5"]["run"] == {"time": 1, "status": "event"}


def test_answers_drive_the_accuracy_metrics(build_answers):
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
    settings = AdaptationSettings(adapted_threshold=0.5, per_layer=False, confidence_intervals=False, report="full")
    values = _metrics(settings=settings)
    assert not any("_layer" in key or "_ci_" in key for key in values)
    assert "stabilization_censored@5" in values and "pvalue_kl_run_new@5" in values


def test_log_ratio_detection_statistic_changes_the_payload():
    settings = AdaptationSettings(adapted_threshold=0.5, detection_statistic="log_ratio")
    assert _metrics(settings=settings)["detection_rate@5"]["run"] == [-1.0, 0.0, 0.5, 1.5]
    short = AdaptationSettings(adapted_threshold=0.5, horizon_tokens=2)   # the payload keeps the horizon only
    assert _metrics(settings=short)["detection_rate@5"]["run"] == [1.0, 1.0]


def test_malformed_traces_are_reported_with_the_doc_id(build_answers, build_trace, run_series):
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


@pytest.mark.parametrize("dtype, score_dtype, adapted", [
    (None, None, True), ("float32", "float32", True), ("float16", "float32", True),
    ("bfloat16", "float32", False), ("bfloat16", "bfloat16", False), ("float16", "float16", True),
])
def test_the_adapted_rule_needs_a_gap_the_traces_precision_resolves(dtype, score_dtype, adapted, build_answers,
                                                                    build_trace, run_series):
    """A 0.2-nat gap is far above float32 and float16 rounding but within bfloat16's (0.25 nats)."""
    close = run_series([1.2, 1.2, 1.2, 1.2], [1.0, 1.0, 1.0, 1.0])
    trace = build_trace({5: (close, NOISE)})
    if dtype is not None:
        trace["settings"].update(dtype=dtype, score_dtype=score_dtype)
    values = doc_metrics(trace, build_answers([5]), SETTINGS)
    event = values["adaptation_point_share@5"]["run"]
    assert (event["status"] == "event") is adapted, event
