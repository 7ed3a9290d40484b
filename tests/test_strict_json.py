"""Results and samples files are strict JSON (no NaN / Infinity), read back as words."""
import json
import math
import os
import subprocess
import sys

import pytest

from kvinject.metrics.values import NOT_ESTIMABLE, NOT_REACHED, NotEstimable, NotReached
from kvinject.strict_json import decoded_value, strict_json
from kvinject.task_aggregation import LM_EVAL_WARNING


def _reject(constant):
    raise ValueError(f"not strict JSON: {constant}")


def strict_loads(text: str):
    """json.loads as JSON.parse or jq read a file: NaN / Infinity are errors."""
    return json.loads(text, parse_constant=_reject)


def test_non_finite_floats_become_null_at_any_depth():
    value = {"a": float("nan"), "b": [1.0, float("inf"), (-math.inf, 2)], "c": {"d": NOT_REACHED},
             "e": "NaN", "f": 3}
    assert strict_json(value) == {"a": None, "b": [1.0, None, [None, 2]], "c": {"d": None},
                                  "e": "NaN", "f": 3}
    strict_loads(json.dumps(strict_json(value)))


def test_null_reads_back_as_not_estimable_or_not_reached():
    results = {"adaptation_point_median@5,none": None, "adaptation_point_median_reached@5,none": 0.0,
               "stabilization_median@5,none": None, "stabilization_median_reached@5,none": None,
               "adaptation_point_share@5,none": None}
    assert isinstance(decoded_value("adaptation_point_median@5", None, results, ",none"), NotReached)
    assert isinstance(decoded_value("stabilization_median@5", None, results, ",none"), NotEstimable)
    assert isinstance(decoded_value("adaptation_point_share@5", None, results, ",none"), NotEstimable)
    assert decoded_value("adaptation_point_share@5", 0.25, results, ",none") == 0.25
    assert isinstance(decoded_value("x_median@5", math.inf, {}, ""), NotReached)   # an older file


def test_named_values_print_as_words_in_lm_evals_table():
    from lm_eval.utils import make_table

    results = {"results": {"adaptation_semantic": {
        "alias": "adaptation_semantic", "adaptation_point_median@5,none": NOT_REACHED,
        "adaptation_point_share@5,none": NOT_ESTIMABLE, "n_docs@5,none": 2.0}},
        "versions": {"adaptation_semantic": 1}, "n-shot": {"adaptation_semantic": 0},
        "higher_is_better": {"adaptation_semantic": {}}}
    table = make_table(results)
    assert "not reached" in table and "not estimable" in table and "nan" not in table
    assert "inf" not in table.replace("adaptation_", "")


def test_the_tracker_writes_strict_json(tmp_path):
    """The start-up hook wraps lm-eval's EvaluationTracker: NaN / inf reach no file."""
    from lm_eval.loggers.evaluation_tracker import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(tmp_path))
    tracker.general_config_tracker.model_name_sanitized = "m"
    results = {"results": {"t": {"a,none": float("nan"), "b,none": NOT_REACHED, "c,none": 0.5}},
               "config": {}}
    tracker.save_results_aggregated(results=results, samples=None)
    written = strict_loads(next((tmp_path / "m").glob("results_*.json")).read_text())
    assert written["results"]["t"] == {"a,none": None, "b,none": None, "c,none": 0.5}
    tracker.save_results_samples("t", [{"doc_id": 0, "metrics": ["x"], "x": float("nan")}])
    for line in next((tmp_path / "m").glob("samples_t_*.jsonl")).read_text().splitlines():
        assert strict_loads(line)["x"] is None


@pytest.mark.slow
def test_a_smollm2_run_without_controls_writes_strict_json(tmp_path):
    """The real SmolLM2 on adaptation_math, --limit 2 (its first two docs are changed problems, no
    identical control), full report: the *_vs_controls keys are not estimable, medians may be
    not reached; the results JSON and samples parse with a strict parser and the table prints
    words, not nan / inf."""
    if not os.environ.get("KVINJECT_MAWPS_SOURCE"):
        pytest.skip("KVINJECT_MAWPS_SOURCE is not set (CI points it at ../shared/data/mawps)")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "kvinject",
         "--model_args", "pretrained=smollm2-135m,injection_points=1:2,track_attention=False,track_hidden=False",
         "--tasks", "adaptation_math", "--limit", "2", "--output_path", str(out), "--log_samples",
         "--gen_kwargs", "max_gen_toks=24", "--metadata", json.dumps({"adaptation": {"report": "full"}})],
        capture_output=True, text=True, cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = out / "smollm2-135m"
    results = strict_loads(next(folder.glob("results_*.json")).read_text())
    values = results["results"]["adaptation_math"]
    assert not any(key.startswith("n_controls@") for key in values), "a control among the docs"
    assert values["detection_vs_controls_pvalue@1,none"] is None       # not estimable: null
    for line in next(folder.glob("samples_adaptation_math_*.jsonl")).read_text().splitlines():
        strict_loads(line)
    table = result.stdout
    assert "not estimable" in table and "| nan" not in table and "| inf" not in table
    # full-report keys cover different docs by design: never lm-eval's warning (kvinject's one line
    # replaces it where the counts differ; tests/test_task_aggregation.py checks both cases)
    assert LM_EVAL_WARNING not in result.stderr


def test_a_null_median_interval_end_is_unbounded_wherever_there_is_data():
    results = {"adaptation_point_median_reached@5,none": 1.0, "stabilization_median_reached@5,none": None,
               "detection_latency_median_reached@5,none": 0.0}
    for name in ("adaptation_point_median_ci_high@5", "detection_latency_median_ci_low@5"):
        assert isinstance(decoded_value(name, None, results, ",none"), NotReached), name
    assert isinstance(decoded_value("stabilization_median_ci_high@5", None, results, ",none"), NotEstimable)
    assert decoded_value("adaptation_point_median_ci_low@5", 3.0, results, ",none") == 3.0
    # a reached median is never read as "not reached" from a null: that null is "no data"
    assert isinstance(decoded_value("adaptation_point_median@5", None, results, ",none"), NotEstimable)
