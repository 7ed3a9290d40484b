"""Helpers of the report tests: small lm-eval-shaped run folders and the study's per-problem keys.
Test functions reach them as fixtures (tests/reports/conftest.py).

Traces are built with kvinject.trace_schema's builders (and checked with its validate_trace); the
per-token series come from the metric tests' builder (helpers.run_series).
"""
from __future__ import annotations

import json
from pathlib import Path

from helpers import run_series

from kvinject import trace_schema as schema

DATE = "2026-01-02T03-04-05.000006"
# The original study's per-problem format: top-level keys, and the keys of each nested part.
SEED_TOP_KEYS = {"problem_index", "original_problem", "alternative_problem", "timestamp", "model",
                 "token_analysis", "attention_analysis", "causal_analysis", "unified_summary"}
SEED_SUMMARY_KEYS = {"adapted", "adaptation_latency_tokens", "adaptation_quality", "assessment"}
SEED_ATTENTION_KEYS = {"stabilization_tokens", "attention_shift_magnitude", "final_attention_ratio"}
SEED_UNIFIED_KEYS = {"adaptation_detected", "adaptation_quality", "best_injection_point", "key_findings"}


def check_seed_format(report: dict) -> None:
    """Assert that a per-problem dict has every key of the study's format, with sane types."""
    assert SEED_TOP_KEYS <= set(report), SEED_TOP_KEYS - set(report)
    assert isinstance(report["problem_index"], int) and isinstance(report["model"], str)
    assert report["token_analysis"], "no injection point in token_analysis"
    for name, entry in report["token_analysis"].items():
        assert name.startswith("injection_") and name[len("injection_"):].isdigit(), name
        assert SEED_SUMMARY_KEYS <= set(entry["summary"]), (name, entry)
    for name, entry in report["attention_analysis"].items():
        assert name in report["token_analysis"] and SEED_ATTENTION_KEYS <= set(entry), (name, entry)
    assert {"mean_adaptation", "optimal_injection"} <= set(report["causal_analysis"]["overall"])
    assert isinstance(report["causal_analysis"]["recommendations"], list)
    assert SEED_UNIFIED_KEYS <= set(report["unified_summary"])
    assert isinstance(report["unified_summary"]["key_findings"], list)
    json.dumps(report, allow_nan=False)   # plain JSON, no NaN


def _injection(point: int, series: dict | None, noise: bool) -> dict:
    pre = list(range(100, 100 + point))
    if series is None:   # the baseline stopped before N tokens
        run = schema.condition("original", pre[:1], "x", "eos")
        return schema.injection_condition(run, point, [7, 8], "7 8", pre[:1], [], schema.empty_series(True, True),
                                          f"baseline stopped after 1 tokens (eos) before N={point}",
                                          "random" if noise else None)
    post = list(range(200, 200 + len(series["kl_run_old"])))
    run = schema.condition("original", pre + post, "text", "max_new_tokens")
    return schema.injection_condition(run, point, [7, 8], "7 8", pre, post, series,
                                      noise_kind="random" if noise else None)


def make_trace(runs: dict, doc_id: str = "doc-0", control: bool = False, strategy: str = "append") -> dict:
    """runs: {N: (injection series, noise series)}, None for a point the baseline never reached."""
    original, alternative = [1, 11, 12, 13], [1, 11, 12, 13] if control else [1, 11, 22, 13]
    settings = {"injection_points": list(runs), "strategy": strategy, "noise": "random",
                "track_attention": True, "track_hidden": True, "seed": 1234, "max_new_tokens": 16,
                "stop_sequences": ["\n\n"]}
    conditions = {"baseline": schema.condition("original", [100], "a", "eos"),
                  "oracle": schema.condition("alternative", [300], "b", "eos")}
    for point, (injection, noise) in runs.items():
        conditions[f"injection@{point}"] = _injection(point, injection, noise=False)
        conditions[f"noise@{point}"] = _injection(point, noise, noise=True)
    prompts = {"original": {"text": "Q: original?", "ids": original},
               "alternative": {"text": "Q: original?" if control else "Q: changed?", "ids": alternative}}
    trace = json.loads(json.dumps(schema.build_trace(doc_id, settings, prompts, conditions)))
    schema.validate_trace(trace)
    return trace


def simple_trace(doc_id: str = "doc-0", points=(1, 2), length: int = 6, **kwargs) -> dict:
    """Every point injected; the injection run moves towards the new context, the noise run not."""
    return make_trace({point: (run_series([0.2] * length, [0.1] * length, injected_mass=0.5),
                               run_series([0.1] * length, [0.3] * length, injected_mass=0.2))
                       for point in points}, doc_id=doc_id, **kwargs)


def write_run(folder: Path, model: str, task_results: dict, traces=(), task: str = "adaptation_semantic",
              model_args: dict | None = None, higher_is_better: dict | None = None,
              generation_kwargs: dict | None = None, date: str = DATE) -> Path:
    """A run folder as lm-eval + kvinject leave it: results_<date>.json and traces_<date>.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {
        "results": {task: {"alias": task, **task_results}},
        "configs": {task: {"task": task, "generation_kwargs": generation_kwargs or {"max_gen_toks": 16},
                           "metadata": {"adaptation": {}}}},
        "versions": {task: 1.0},
        "n-shot": {task: 0},
        "higher_is_better": {task: higher_is_better or {}},
        "n-samples": {task: {"original": 500, "effective": max(len(traces), 1)}},
        "config": {"model": "kvinject", "model_args": {"pretrained": model, **(model_args or {})}},
        "model_name": model,
        "chat_template": None,
        "system_instruction": None,
        "fewshot_as_multiturn": None,
    }
    (folder / f"results_{date}.json").write_text(json.dumps(results))
    if traces:
        with (folder / f"traces_{date}.jsonl").open("w") as handle:
            for trace in traces:
                handle.write(json.dumps({"task": task, "trace": trace}) + "\n")
    return folder


def write_prm(folder: Path, judge: str, summary: dict, date: str = DATE) -> Path:
    """A `kvinject prm` output beside a run's traces: summary = {task: [{condition, docs, mean, ...}]}."""
    path = folder / f"prm_{judge}_traces_{date}.json"
    path.write_text(json.dumps({"deprecated": "legacy", "traces": f"traces_{date}.jsonl",
                                "judge": {"model_args": judge}, "summary": summary, "docs": {}}))
    return path


def write_samples(folder: Path, task: str, samples: list[dict], date: str = DATE) -> Path:
    """lm-eval's --log_samples file of a run: one JSON line per doc (doc_id, doc, doc_hash, metrics, values)."""
    path = folder / f"samples_{task}_{date}.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample) + "\n")
    return path
