"""Per-problem JSON in the original study's format: every value follows a documented rule."""
import pytest

from kvinject.metrics import AdaptationSettings
from kvinject.reports.per_problem import LabelThresholds, assess, problem_report, problem_reports
from kvinject.reports.runs import find_runs

SETTINGS = AdaptationSettings()


def report(trace, thresholds=LabelThresholds()):
    return problem_report(trace, 0, "model-a", "2026-01-02T03:04:05", SETTINGS, thresholds)


@pytest.mark.parametrize("adapted, latency, quality, label", [
    (True, 1, 0.9, "excellent"), (True, 4, 0.51, "excellent"), (True, 5, 0.9, "good"), (True, 9, 0.9, "good"),
    (True, 10, 0.9, "slow"), (True, 1, 0.5, "partial"), (False, None, 0.0, "failed"),
])
def test_assessment_follows_the_study_rules(adapted, latency, quality, label):
    assert assess(adapted, latency, quality, LabelThresholds()) == label


def test_thresholds_are_configurable_and_checked():
    assert assess(True, 4, 0.9, LabelThresholds.from_mapping({"excellent_latency": 3})) == "good"
    with pytest.raises(ValueError, match="unknown label threshold.*excelent_latency"):
        LabelThresholds.from_mapping({"excelent_latency": 3})
    with pytest.raises(ValueError, match="adapted_share"):
        LabelThresholds(adapted_share=1.5)
    with pytest.raises(ValueError, match="excellent_latency"):
        LabelThresholds(excellent_latency=12, good_latency=10)


def test_values_come_from_the_trace(check_seed_format, make_trace, run_series):
    # injection@2: a_t = old / (old + new) is 0.2, 0.2, then 5/6 > 0.8 from t = 3 on (6 of 8 tokens adapted)
    kl_old, kl_new = [0.1, 0.1] + [0.5] * 6, [0.4, 0.4] + [0.1] * 6
    injected = run_series(kl_old, kl_new, injected_mass=[0.2, 0.2] + [0.6] * 6, original_mass=0.3)
    noise = run_series([0.1] * 8, [0.4] * 8, injected_mass=0.1, original_mass=0.3)
    # injection@5: never above 0.5
    late = run_series([0.1] * 4, [0.3] * 4, injected_mass=0.1, original_mass=0.3)
    result = report(make_trace({2: (injected, noise), 5: (late, noise)}))
    check_seed_format(result)
    summary = result["token_analysis"]["injection_2"]["summary"]
    assert summary == {"adapted": True, "adaptation_latency_tokens": 3, "adaptation_quality": 0.75,
                       "assessment": "excellent"}
    assert result["token_analysis"]["injection_5"]["summary"]["assessment"] == "failed"
    attention = result["attention_analysis"]["injection_2"]
    assert attention["stabilization_tokens"] == 3                      # injected > original from t = 3 on
    assert attention["attention_shift_magnitude"] == pytest.approx((0.4 + 6 * 0.6) / 8 - 0.1)
    assert attention["final_attention_ratio"] == pytest.approx((2 * 0.2 + 6 * 0.6) / 8 / 0.3)  # W = 10 > T
    assert result["attention_analysis"]["injection_5"]["stabilization_tokens"] is None   # never reached
    overall = result["causal_analysis"]["overall"]
    assert overall["mean_adaptation"] == pytest.approx(((0.4 + 6 * 5 / 6) / 8 + 0.25) / 2)
    assert overall["optimal_injection"] == 2
    recommendations = result["causal_analysis"]["recommendations"]
    assert recommendations[0].startswith("Moderate adaptation") and "inject as early" in recommendations[1]
    assert recommendations[2] == "Optimal injection point: after 2 tokens (highest adaptation score)."
    unified = result["unified_summary"]
    assert unified["adaptation_detected"] is True and unified["adaptation_quality"] == "excellent"
    assert unified["best_injection_point"] == "injection_2"
    assert unified["key_findings"][:2] == ["Token-level: excellent adaptation at injection_2",
                                           "Attention: stabilizes after ~3.0 tokens"]


def test_controls_and_points_not_injected_are_labelled_not_assessed(check_seed_format, make_trace, run_series,
                                                                    simple_trace):
    control = report(simple_trace(control=True))
    check_seed_format(control)
    assert {entry["summary"]["assessment"] for entry in control["token_analysis"].values()} == {"identical control"}
    assert control["unified_summary"] == {"adaptation_detected": False, "adaptation_quality": "unknown",
                                          "best_injection_point": None, "key_findings": []}
    partly = report(make_trace({1: (run_series([0.1] * 3, [0.3] * 3), run_series([0.1] * 3)), 4: (None, None)}))
    summary = partly["token_analysis"]["injection_4"]["summary"]
    assert summary["assessment"] == "not injected" and "before N=4" in summary["reason"]
    assert summary["adapted"] is None and "injection_4" not in partly["attention_analysis"]


def test_one_report_per_doc_with_the_runs_model_and_time(tmp_path, check_seed_format, simple_trace, write_run):
    write_run(tmp_path, "model-a", {"adaptation_score@1,none": 0.5},
              [simple_trace("doc-a"), simple_trace("doc-b", control=True), simple_trace("doc-c")])
    reports = problem_reports(find_runs([tmp_path])[0], "adaptation_semantic")
    assert [(r["problem_index"], r["doc_id"]) for r in reports] == [(0, "doc-a"), (1, "doc-b"), (2, "doc-c")]
    assert {r["model"] for r in reports} == {"model-a"}
    assert {r["timestamp"] for r in reports} == {"2026-01-02T03:04:05.000006"}
    assert reports[0]["original_problem"] == "Q: original?" and reports[0]["alternative_problem"] == "Q: changed?"
    for item in reports:
        check_seed_format(item)
