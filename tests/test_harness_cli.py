"""The front door: lm-eval finds the kvinject model and tasks after a plain install."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvinject.model_adapters.trace_log import read_traces

REPO = Path(__file__).resolve().parents[1]
LM_EVAL = [sys.executable, "-m", "lm_eval"]


def run(command, env=None, cwd=None, timeout=600):
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout
    )


def test_nothing_heavy_is_imported_at_start_up():
    code = "import sys; print(sorted(m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules)); print('kvinject._autoload' in sys.modules)"
    result = run([sys.executable, "-c", code])
    assert result.stdout.split() == ["[]", "True"], result.stderr


def test_builtin_models_still_resolve_beside_kvinject():
    code = (
        "from lm_eval.api.registry import get_model\n"
        "print(get_model('hf').__name__, get_model('kvinject').__name__)"
    )
    result = run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["HFLM", "KVInjectLM"]


def test_ls_tasks_lists_our_tasks_and_a_users_include_path(tmp_path):
    (tmp_path / "my_task.yaml").write_text(
        "task: my_own_task\ndataset_path: json\noutput_type: generate_until\ndoc_to_text: x\ndoc_to_target: y\n"
    )
    result = run(LM_EVAL + ["ls", "tasks", "--include_path", str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("adaptation_math", "adaptation_semantic", "adaptation", "my_own_task"):
        assert name in result.stdout, name


def test_cli_run_writes_results_and_traces_named_after_the_model(local_model_dir, tmp_path):
    out = tmp_path / "out"
    result = run(
        ["lm_eval", "--model", "kvinject", "--model_args", f"pretrained={local_model_dir},injection_points=1:3",
         "--tasks", "adaptation_semantic", "--limit", "2", "--output_path", str(out), "--log_samples"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model_folder = out / str(local_model_dir).replace("/", "__")
    results_file = next(model_folder.glob("results_*.json"))
    results = json.loads(results_file.read_text())
    assert results["config"]["model"] == "kvinject"
    assert len(results["configs"]["adaptation_semantic"]["metadata"]["dataset"]["sha256"]) == 64
    semantic = results["results"]["adaptation_semantic"]
    assert any(key.startswith("adaptation_gap@1") for key in semantic)
    traces = read_traces(next(model_folder.glob("traces_*.jsonl.gz")))
    assert len(traces) == 2
    assert {t["task"] for t in traces} == {"adaptation_semantic"}
    assert set(traces[0]["trace"]["conditions"]) >= {"baseline", "oracle", "injection@1", "noise@3"}
    samples = next(model_folder.glob("samples_adaptation_semantic_*.jsonl")).read_text().splitlines()
    assert len(samples) == 2


def test_python_api_simple_evaluate(local_model_dir):
    import lm_eval

    results = lm_eval.simple_evaluate(
        model="kvinject",
        model_args={"pretrained": str(local_model_dir), "injection_points": [2]},
        tasks=["adaptation_semantic"],
        limit=2,
    )
    semantic = results["results"]["adaptation_semantic"]
    assert "baseline_accuracy,none" in semantic
    assert len(results["samples"]["adaptation_semantic"]) == 2


def test_bad_model_arg_fails_before_loading_and_lists_valid_names(tmp_path):
    result = run(
        ["lm_eval", "--model", "kvinject", "--model_args", "pretrained=/does/not/exist,injection_point=5",
         "--tasks", "adaptation_semantic", "--limit", "1"],
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "unknown model arg(s) injection_point" in result.stderr
    assert "injection_points" in result.stderr


def test_adaptation_task_with_another_model_fails_at_once(local_model_dir, tmp_path):
    result = run(
        ["lm_eval", "--model", "hf", "--model_args", f"pretrained={local_model_dir}", "--device", "cpu",
         "--tasks", "adaptation_semantic", "--limit", "1"],
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "need `--model kvinject`" in result.stderr


def test_wrapper_works_with_the_start_up_hook_disabled(local_model_dir, tmp_path):
    result = run(
        [sys.executable, "-m", "kvinject", "--model", "kvinject", "--model_args",
         json.dumps({"pretrained": str(local_model_dir), "injection_points": [1, 2]}),  # the JSON form
         "--tasks", "adaptation_semantic", "--limit", "1",
         "--metadata", json.dumps({"adaptation": {"report": "full"}})],
        env={"KVINJECT_LMEVAL_DISABLE": "1"},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "control_false_positive_rate@2" in result.stdout  # doc 0 is an identical control


# Every key of the full report (report: full) at a point with a changed-problem doc injected.
EVERY_METRIC_PER_POINT = (
    "n_docs", "injection_accuracy", "stuck_rate", "adaptation_gap", "noise_specificity",
    "adaptation_score", "oracle_convergence", "final_log_ratio", "kl_run_new", "kl_run_old",
    "attention_injected", "attention_original", "attention_shift", "final_attention_ratio",
    "embedding_similarity", "embedding_contrast", "embedding_contrast_mid",
    "adaptation_point_share", "adaptation_point_share_ci_low", "adaptation_point_median",
    "adaptation_point_censored", "adaptation_point_never", "adaptation_point_vs_noise",
    "stabilization_share", "attention_stabilization_share", "detection_rate", "detection_rate_ci_high",
    "detection_latency_median", "detection_latency_never", "detection_false_alarm_bound", "detection_calibrated",
    "detection_latency_vs_noise_pvalue", "detection_horizon", "n_undecided",
    "adaptation_point_median_reached", "detection_latency_median_reached", "oracle_convergence_ci_low",
)
PAIRED_TESTS = ("pvalue_kl_run_new", "pvalue_injection_accuracy")   # need two changed docs at N
POINTS = (1, 2, 4)  # SmolLM2 often answers a MAWPS problem in under 15 tokens: inject early


@pytest.mark.slow
def test_smollm2_run_from_the_command_line_reports_every_metric(tmp_path):
    """The end-to-end check: the real SmolLM2 through `lm_eval`, both tasks, every metric of the full
    report, no NaN (a median may be inf: not reached).
    --limit 4 takes an identical control in both tasks (their docs are in a fixed mixed order)."""
    if not os.environ.get("KVINJECT_MAWPS_SOURCE"):
        pytest.skip("KVINJECT_MAWPS_SOURCE is not set (CI points it at ../shared/data/mawps)")
    out = tmp_path / "out"
    points = ":".join(map(str, POINTS))
    result = run(
        ["lm_eval", "--model", "kvinject", "--model_args", f"pretrained=smollm2-135m,batch_size=2,injection_points={points}",
         "--tasks", "adaptation_math,adaptation_semantic", "--limit", "4", "--output_path", str(out),
         "--gen_kwargs", "max_gen_toks=48",  # noise runs tend to ramble to the budget: keep CI short
         "--metadata", json.dumps({"adaptation": {"report": "full"}})],
        cwd=tmp_path,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = out / "smollm2-135m"
    results = json.loads(next(folder.glob("results_*.json")).read_text())
    records = read_traces(next(folder.glob("traces_*.jsonl.gz")))
    assert sorted(r["task"] for r in records) == ["adaptation_math"] * 4 + ["adaptation_semantic"] * 4
    assert {r["trace"]["settings"]["max_new_tokens"] for r in records} == {48}  # --gen_kwargs reached the engine
    for task in ("adaptation_math", "adaptation_semantic"):
        traces = [r["trace"] for r in records if r["task"] == task]
        values = {k.split(",")[0]: v for k, v in results["results"][task].items() if k.endswith(",none")}
        expected = {"baseline_accuracy", "oracle_accuracy"}
        for n in POINTS:
            injected = [t for t in traces if t["conditions"][f"injection@{n}"]["injected"]]
            changed = [t for t in injected if t["prompts"]["original"]["ids"] != t["prompts"]["alternative"]["ids"]]
            if changed:
                expected |= {f"{name}@{n}" for name in EVERY_METRIC_PER_POINT}
            if len(changed) >= 2:
                expected |= {f"{name}@{n}" for name in PAIRED_TESTS}
            if any(t["prompts"]["original"]["ids"] == t["prompts"]["alternative"]["ids"] for t in injected):
                expected |= {f"control_false_positive_rate@{n}", f"detection_vs_controls_pvalue@{n}", f"n_controls@{n}",
                             f"detection_latency_vs_controls_pvalue@{n}",
                             f"adaptation_point_vs_controls_pvalue@{n}"}
        assert any(key.endswith(f"@{POINTS[0]}") for key in expected), f"{task}: no doc injected at all"
        assert expected <= set(values), sorted(expected - set(values))
        assert all(v == v for v in values.values()), [k for k, v in values.items() if v != v]


def test_default_table_shows_the_headline_keys_only(local_model_dir, tmp_path):
    """report: headline (the default): at most 2 + 10 x 3 = 32 rows per task for 3 injection points."""
    result = run(
        ["lm_eval", "--model", "kvinject", "--model_args", f"pretrained={local_model_dir},injection_points=1:2:3",
         "--tasks", "adaptation_math,adaptation_semantic", "--limit", "4", "--gen_kwargs", "max_gen_toks=8",
         "--output_path", str(tmp_path / "out")],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    for task in ("adaptation_math", "adaptation_semantic"):
        rows = [key for key in results["results"][task] if key.endswith(",none") and "_stderr" not in key]
        assert 10 <= len(rows) <= 32, rows
        assert "injection_accuracy@3,none" in rows and not any("pvalue" in key or "_ci_" in key for key in rows)
        assert isinstance(results["results"][task]["injection_accuracy@3_stderr,none"], float)


def test_model_args_win_over_the_harness_defaults(local_model_dir):
    from kvinject.model_adapters.harness_model import KVInjectLM

    # lm-eval's CLI always adds batch_size=1 and device=cuda:0 beside --model_args.
    harness = {"batch_size": 1, "max_batch_size": None, "device": "cuda:0"}
    lm = KVInjectLM.create_from_arg_string(f"pretrained={local_model_dir},batch_size=3,device=cpu", harness)
    assert (lm.batch_size, lm.device) == (3, "cpu")
    lm = KVInjectLM.create_from_arg_obj({"pretrained": str(local_model_dir)}, {"batch_size": "4", "device": None})
    assert lm.batch_size == 4


def test_metric_settings_come_from_metadata(local_model_dir, tmp_path):
    base = ["lm_eval", "--model", "kvinject", "--model_args", f"pretrained={local_model_dir},injection_points=1",
            "--tasks", "adaptation_semantic", "--limit", "3", "--gen_kwargs", "max_gen_toks=8"]
    result = run(base + ["--metadata", json.dumps({"adaptation": {"confidence_intervals": False, "window_tokens": 3}})],
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "adaptation_gap@1" in result.stdout and "_ci_" not in result.stdout
    result = run(base + ["--metadata", json.dumps({"adaptation": {"window": 3}})], cwd=tmp_path)
    assert result.returncode != 0 and "window" in result.stderr and "window_tokens" in result.stderr
    assert "kvinject docs" not in result.stderr  # refused before any generation
