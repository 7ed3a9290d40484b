"""``kvinject single``: analyse one problem and print what the model wrote and where it switched.

    kvinject single --model smollm2-135m --original "What is 3 + 5?" --alternative "What is 4 + 5?" \\
        [--original_answer 8 --alternative_answer 9] [--injection_points 2,5]
    kvinject single --model smollm2-135m --task adaptation_semantic --doc country_capital-france-spain

The problem goes through the same ``KVInjectLM.generate_until`` as an lm-eval run (one request), and
its measures are the task's per-doc metrics (kvinject.metrics.doc_metrics); the free-text form uses
the adaptation_pairs task's prompt and answer matching. Without gold answers the answer-based measures
are left out, not guessed. The trace and the adaptation curve image are written to --output_path.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
from pathlib import Path

from kvinject.commands.common import existing_folder, extra_model_args, injection_points
from kvinject.metrics.keys import METRICS, ONE_PROBLEM, parse_key

FREE_TEXT_TASK = "adaptation_pairs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kvinject single``: the problem as text or as a task's doc, and the run settings."""
    parser.add_argument("--model", required=True, help="pretrained model: Hub id, local folder or offline alias (smollm2-135m)")
    parser.add_argument("--original", help="the original problem")
    parser.add_argument("--alternative", help="the changed problem injected mid-generation")
    parser.add_argument("--original_answer", help="gold answer of the original problem (optional)")
    parser.add_argument("--alternative_answer", help="gold answer of the changed problem (optional)")
    parser.add_argument("--task", help="take the problem from this adaptation task instead (with --doc)")
    parser.add_argument("--doc", help="the doc id (or position) within --task")
    parser.add_argument("--include_path", help="folder of your own task YAMLs (as lm-eval's --include_path)")
    parser.add_argument("--injection_points", default="2,5,10", help="generated tokens before the injection, e.g. 2,5,10")
    parser.add_argument("--max_gen_toks", type=int, default=48, help="generation budget per condition")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--model_args", default="", help="further kvinject model args as k=v,k=v (see README)")
    parser.add_argument("--output_path", default="kvinject_single", help="folder for the trace and the curve image")


def run(args: argparse.Namespace) -> int:
    """Run one problem under every condition, print its summary and write its trace and curve image; 2 for a bad
    argument, else 0."""
    try:
        model_args = {"pretrained": args.model, "injection_points": injection_points(args.injection_points),
                      "device": args.device, "trace_dir": str(Path(args.output_path).resolve()),
                      **extra_model_args(args.model_args)}
        from kvinject.model_adapters.model_args import parse_model_args

        parse_model_args(model_args)
        problem = _problem(args)
    except ValueError as error:
        print(f"kvinject single: {error}", file=sys.stderr)
        return 2
    from lm_eval.api.instance import Instance

    from kvinject.metrics import doc_metrics
    from kvinject.model_adapters.harness_model import KVInjectLM

    lm = KVInjectLM(**model_args)
    doc, context, gen_kwargs = problem["doc"], problem["context"], problem["gen_kwargs"]
    request = Instance(request_type="generate_until", doc=doc, arguments=(context, gen_kwargs), idx=0,
                       metadata=(problem["task"], doc["id"], 1))
    trace = lm.generate_until([request])[0].trace
    matcher = problem["matcher"]
    answers = {name: matcher(entry["text"], doc) for name, entry in trace["conditions"].items()} if matcher else {}
    values = doc_metrics(trace, answers, dataclasses.replace(problem["settings"], report="full"))  # every per-doc key
    print(summary(trace, answers, values, problem["settings"], args.model, lm.tokenizer.decode))
    print(f"\ntrace: {lm.trace_log.path}")
    print(curve_image(trace, problem["settings"], Path(args.output_path), args.model))
    return 0


def _problem(args) -> dict:
    """doc, prompt, generation kwargs, answer matcher and metric settings of the problem asked for."""
    if args.task or args.doc:
        if not (args.task and args.doc) or args.original or args.alternative:
            raise ValueError("give either --task and --doc, or --original and --alternative")
        include_path = args.include_path and str(existing_folder(args.include_path, "--include_path"))
        return _task_problem(args.task, args.doc, args.max_gen_toks, include_path=include_path)
    if not (args.original and args.alternative):
        raise ValueError("give --original and --alternative (or --task and --doc)")
    if (args.original_answer is None) != (args.alternative_answer is None):
        raise ValueError("give both --original_answer and --alternative_answer, or neither")
    # The free-text problem is a one-pair file of the adaptation_pairs task: same prompt, same matching.
    # Without gold answers it holds "-" and the matcher is dropped, so no answer-based measure is made up.
    folder = Path(args.output_path)
    folder.mkdir(parents=True, exist_ok=True)
    pair = {"id": "single", "original": args.original, "alternative": args.alternative,
            "original_answer": args.original_answer or "-", "alternative_answer": args.alternative_answer or "-"}
    (folder / "single_pair.jsonl").write_text(json.dumps(pair, ensure_ascii=False) + "\n", encoding="utf-8")
    problem = _task_problem(FREE_TEXT_TASK, "single", args.max_gen_toks,
                            {"dataset_path": str((folder / "single_pair.jsonl").resolve())})
    if args.original_answer is None:
        problem["matcher"] = None
    return problem


def _task_problem(task_name: str, doc_id: str, max_gen_toks: int, metadata: dict | None = None,
                  include_path: str | None = None) -> dict:
    from lm_eval.tasks import TaskManager, get_task_dict

    from kvinject.adaptation_tasks.task import AdaptationTask

    try:
        # only kvinject's tasks (added by the start-up hook) and the user's: indexing lm-eval's own takes long
        manager = TaskManager(include_path=include_path, include_defaults=False, metadata=metadata)
        task = get_task_dict([task_name], manager)[task_name]
    except KeyError:
        raise ValueError(f"--task {task_name}: no such task (see `lm_eval ls tasks`)") from None
    if not isinstance(task, AdaptationTask):
        raise ValueError(f"--task {task_name}: not an adaptation task")
    docs = list(task.eval_docs)
    matches = [doc for doc in docs if str(doc.get("id")) == doc_id]
    if not matches and doc_id.isdigit() and int(doc_id) < len(docs):
        matches = [docs[int(doc_id)]]
    if not matches:
        raise ValueError(f"--doc {doc_id!r}: no such doc id or position in {task_name} ({len(docs)} docs, "
                         f"e.g. {', '.join(str(d.get('id')) for d in docs[:3])})")
    return {"task": task_name, "doc": matches[0], "context": task.doc_to_text(matches[0]),
            "gen_kwargs": {**dict(task.config.generation_kwargs or {}), "max_gen_toks": max_gen_toks},
            "matcher": task.answer_matcher, "settings": task.adaptation_settings}


def _event(value: dict) -> str:
    """A per-doc time-to-event value of the injection run (metrics/events.py)."""
    run = value["run"]
    if run["status"] == "event":
        return f"after {run['time']} tokens"
    return "never (the run stopped)" if run["status"] == "never" else f"not within {run['time']} tokens"


def _measure(value) -> str | None:
    if isinstance(value, dict) and set(value) == {"run", "noise"}:
        return _event(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return None  # detection statistics and p-value families need many problems


def _meaning(name: str) -> str:
    """The metric's own description (kvinject.metrics.keys.METRICS), with @N read as this point."""
    return METRICS[parse_key(f"{name}@0").metric].description


def summary(trace: dict, answers: dict, values: dict, settings, model: str, decode) -> str:
    """The readable report of one problem; ``decode(ids) -> str`` renders the runs' token ids."""
    wrap = lambda text: textwrap.indent(textwrap.fill(text.strip() or "(nothing)", 96), "      ")  # noqa: E731
    prompts, conditions = trace["prompts"], trace["conditions"]
    lines = [f"kvinject single: {model}, doc {trace['doc_id']}",
             "original prompt:", wrap(prompts["original"]["text"]),
             "alternative prompt:", wrap(prompts["alternative"]["text"])]

    def answer(name: str) -> str:
        if name not in answers:
            return ""
        found = answers[name]
        verdict = "new problem's answer" if found["new"] else "old problem's answer" if found["old"] else "neither gold answer"
        return f"  [answer {found['answer']!r}: {verdict}]"

    lines += ["", f"baseline (original prompt, {conditions['baseline']['stop_reason']}){answer('baseline')}:",
              wrap(conditions["baseline"]["text"]),
              f"oracle (alternative prompt from the start){answer('oracle')}:", wrap(conditions["oracle"]["text"])]
    for point in trace["settings"]["injection_points"]:
        run, noise = conditions[f"injection@{point}"], conditions[f"noise@{point}"]
        lines.append("")
        if not run["injected"]:
            lines.append(f"injection@{point}: not injected ({run['not_injected_reason']})")
            continue
        lines += [f"injection@{point}: after {point} tokens the new problem was appended{answer(f'injection@{point}')}",
                  wrap(f"{decode(run['pre_ids'])} ⟦{run['injected_text'].strip()}⟧ {decode(run['post_ids'])}")]
        lines += [f"noise@{point} (control: {noise.get('noise_kind')} tokens injected){answer(f'noise@{point}')}:",
                  wrap(decode(noise["post_ids"]))]
        switched = values.get(f"adaptation_point_share@{point}")
        if isinstance(switched, dict):
            lines.append(f"    switched: {_event(switched)}"
                         f" (a_t > {settings.adapted_threshold}; {len(run['post_ids'])} tokens after the injection)")
        for name in ONE_PROBLEM:
            shown = _measure(values.get(f"{name}@{point}"))
            if shown is not None:
                lines.append(f"    {name:<22}{shown:>20}   {_meaning(name)}")
    return "\n".join(lines)


def curve_image(trace: dict, settings, folder: Path, model: str) -> str:
    """Draw the doc's adaptation curves with the report package's plotting."""
    from kvinject.reports.curves import task_curves
    from kvinject.reports.plotting import draw_curves

    curves = task_curves({model: [trace]}, settings, 200, 0.95, 0)
    if not curves:
        return "curve image: none (an identical control, or no injection point was reached)"
    written = draw_curves(curves, f"Adaptation of {model} on one problem ({trace['doc_id']})",
                          folder / "curves", settings.adapted_threshold, 0.95)
    return "curve image: " + ", ".join(map(str, written))
