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


SEMANTIC_MATCHER = "kvinject.adaptation_tasks.adaptation_semantic.answers.match_semantic_answer"
# (doc id, original question/answer, alternative question/answer); the last is an identical control.
HTML_DOCS = (("capital-fr-de", "What is the capital of France?", "Paris", "What is the capital of Germany?", "Berlin"),
             ("capital-it-es", "What is the capital of Italy?", "Rome", "What is the capital of Spain?", "Madrid"),
             ("capital-pt-pt", "What is the capital of Portugal?", "Lisbon", "What is the capital of Portugal?", "Lisbon"))


def varied_trace(doc_id: str, seed: int, control: bool = False, points=(1, 2), length: int = 9) -> dict:
    """A trace whose per-token divergences vary from token to token (a_t spans the colour scale):
    the injection run drifts towards the new context, the noise run stays near the old one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    runs = {}
    for point in points:
        ramp = np.linspace(0.05, 1.5, length)
        runs[point] = (run_series(ramp * rng.uniform(0.5, 1.5, length), 1.6 - ramp,
                                  logp_old=-rng.uniform(0.1, 4, length), logp_new=-rng.uniform(0.1, 4, length),
                                  injected_mass=rng.uniform(0.1, 0.6, length)),
                       run_series(rng.uniform(0.01, 0.3, length), rng.uniform(0.5, 1.5, length)))
    return make_trace(runs, doc_id=doc_id, control=control)


def semantic_doc(doc_id: str, old_q: str, old_a: str, new_q: str, new_a: str) -> dict:
    return {"id": doc_id, "variation_type": "identical" if old_q == new_q else "country_capital",
            "original_question": old_q, "alternative_question": new_q, "original_answer": old_a,
            "alternative_answer": new_a, "original_aliases": [old_a], "alternative_aliases": [new_a]}


def write_html_runs(out: Path, traced_model: str = "model-a") -> dict:
    """Two runs of adaptation_semantic for the HTML report: `traced_model` with traces and
    samples (condition texts that state answers), and model-b with samples only (no traces).
    Returns {"traces": [...], "docs": [...]} of the traced run."""
    docs = [semantic_doc(*entry) for entry in HTML_DOCS]
    traces = []
    for seed, doc in enumerate(docs):
        trace = varied_trace(doc["id"], seed, control=doc["original_question"] == doc["alternative_question"])
        for name, entry in trace["conditions"].items():   # what each run "said"
            said = doc["alternative_answer"] if name.startswith("injection") or name == "oracle" else doc["original_answer"]
            entry["text"] = f"It is a city. The answer is {said}."
        traces.append(trace)
    task = "adaptation_semantic"
    results = {"injection_accuracy@1,none": 0.5, "injection_accuracy@1_stderr,none": 0.25}
    for model, with_traces in ((traced_model, True), ("model-b", False)):
        folder = write_run(out / model.replace("/", "_"), model, results, traces if with_traces else (), task=task)
        results_path = folder / f"results_{DATE}.json"
        data = json.loads(results_path.read_text())
        data["configs"][task]["metadata"]["answer_matcher"] = SEMANTIC_MATCHER
        results_path.write_text(json.dumps(data))
        said = [f"The answer is {doc['original_answer']}." for doc in docs]
        write_samples(folder, task, [{"doc_id": index, "doc": doc, "resps": [[text]], "filtered_resps": [text],
                                      "injection_accuracy@1": float(index == 0)}
                                     for index, (doc, text) in enumerate(zip(docs, said))])
    return {"traces": traces, "docs": docs}
