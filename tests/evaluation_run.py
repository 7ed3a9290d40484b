"""One lm-eval run of ``--model kvinject`` in its own process, for tests that kill, repeat or spread it.

    python tests/evaluation_run.py OUT.json TASK LIMIT MODEL_ARGS_JSON [GEN_KWARGS]
    torchrun --nproc_per_node 2 tests/evaluation_run.py ...   (rank 0 writes OUT.json)

It is lm-eval's own ``simple_evaluate`` with the kvinject model, like ``lm_eval --model kvinject``,
but with a TaskManager that indexes only our tasks: indexing lm-eval's thousands of task YAML files
costs 20-40 s per process on a shared CI core. OUT.json holds the results JSON, every doc's
logged sample (its metrics and hashes) and the records of the run's trace file (one JSON line each).
"""
import json
import sys
from pathlib import Path


def main(out, task, limit, model_args, gen_kwargs=None):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from kvinject.adaptation_tasks import TASKS_DIR
    from kvinject.model_adapters.trace_log import read_traces
    from kvinject.trace_export import named_callables

    results = lm_eval.simple_evaluate(
        model="kvinject",
        model_args=json.loads(model_args),
        tasks=[task],
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        limit=int(limit),
        gen_kwargs=gen_kwargs,
        log_samples=True,
    )
    if results is None:  # not rank 0
        return
    samples = [
        {key: value for key, value in sample.items() if key not in ("resps", "filtered_resps", "doc", "arguments")}
        for sample in results["samples"][task]
    ]
    # The trace file's records, one JSON line each, as its one reader gives them back.
    trace_lines = [json.dumps(record, sort_keys=True) for record in read_traces(results["config"]["trace_file"])]
    payload = {key: value for key, value in results.items() if key != "samples"}
    payload["configs"] = named_callables(payload["configs"])  # as the results file gets them
    payload.update(samples=sorted(samples, key=lambda s: s["doc_id"]), trace_lines=trace_lines)
    Path(out).write_text(json.dumps(payload, default=str, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
