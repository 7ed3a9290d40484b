"""Measure what the adaptation_update card reports: baseline and oracle accuracy and the injected share.

    python -m kvinject.adaptation_tasks.adaptation_update.measure_card --model smollm2-135m --chat \\
        --output card_smollm2.json [--per_type 10] [--points 5 10 15] [--batch_size 8] [--shard 0/3]
    python -m kvinject.adaptation_tasks.adaptation_update.measure_card --merge shard0.json shard1.json ... --output card.json

Prompts come from lm-eval's own rendering of the task (``build_all_requests``, with the model's chat
template under ``--chat`` as ``--apply_chat_template`` does), the engine's inputs from the model adapter's
``problem_from_request``, and the baseline and oracle from the engine's greedy decoder with the task's
stop sequences and token budget, so they are the baseline and oracle an ``lm_eval --model kvinject`` run
computes (up to float rounding between batch sizes). A changed doc is injected at N when its baseline
generated more than N tokens (the engine injects iff the baseline did not stop at or before the N-th).
Answers are scored by the task's own matcher: the baseline against the original answer, the oracle
against the alternative answer; accuracies come with 95% Wilson intervals over docs. Only the two uninjected conditions are decoded: this is the cheap check
of the task's design, not a kvinject run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

TASK = "adaptation_update"
DEFAULT_POINTS = (5, 10, 15)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line of this script (see --help)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="pretrained= of --model kvinject (alias, folder or Hub id)")
    parser.add_argument("--chat", action="store_true", help="render prompts with the model's chat template (--apply_chat_template)")
    parser.add_argument("--per_type", type=int, default=None, help="only the first K docs of each variation type (a pilot)")
    parser.add_argument("--points", type=int, nargs="+", default=list(DEFAULT_POINTS), help="injection points to count")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shard", default="0/1", help="I/N: only every N-th chosen doc from the I-th (parallel runs)")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine the records of these shard outputs instead of running")
    parser.add_argument("--output", type=Path, required=True, help="JSON file: the summary and every doc's outputs")
    return parser.parse_args(argv)


def shard(indices: list[int], spec: str) -> list[int]:
    """Every N-th index from the I-th for `--shard I/N`; ValueError names the flag when malformed."""
    index, _, count = spec.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"--shard {spec!r}: expected I/N with 0 <= I < N, e.g. 0/3")
    return indices[int(index)::int(count)]


def merge(paths: list[Path], task=None) -> dict:
    """One card from shard outputs of the same settings: the records pooled, scored again with the task's
    current matcher when `task` is given, and the summary recomputed."""
    parts = [json.loads(path.read_text()) for path in paths]
    settings = {key: parts[0][key] for key in ("model", "chat_template", "points")}
    for path, part in zip(paths, parts):
        if {key: part[key] for key in settings} != settings:
            raise ValueError(f"--merge: {path} was measured with other settings than {paths[0]}")
    records = sorted((record for part in parts for record in part["records"]), key=lambda r: r["id"])
    if len({record["id"] for record in records}) != len(records):
        raise ValueError("--merge: the shards share docs")
    if task is not None:
        score(records, task)
    return {**settings, "docs": len(records), "seconds": sum(part["seconds"] for part in parts),
            "command": [part["command"] for part in parts], "summary": summarise(records, settings["points"]),
            "records": records}


def load_task():
    """The task as lm-eval loads it (only kvinject's task folder is indexed: lm-eval's own thousands of
    YAML files are not needed)."""
    from lm_eval.tasks import TaskManager

    from kvinject.adaptation_tasks import TASKS_DIR

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load([TASK])["tasks"][TASK]


def chat_renderer(tokenizer):
    """What KVInjectLM.apply_chat_template does for lm-eval's --apply_chat_template."""
    def render(chat_history, add_generation_prompt=True):
        return tokenizer.apply_chat_template(chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             continue_final_message=not add_generation_prompt)
    return render


def pick(docs: list[dict], per_type: int | None) -> list[int]:
    """Indices of the docs to measure: all, or the first `per_type` docs of each variation type."""
    if per_type is None:
        return list(range(len(docs)))
    seen = defaultdict(int)
    chosen = []
    for index, doc in enumerate(docs):
        if seen[doc["variation_type"]] < per_type:
            seen[doc["variation_type"]] += 1
            chosen.append(index)
    return chosen


def requests(task, indices: list[int], chat: bool, tokenizer) -> list:
    """lm-eval's own request instances for the docs at `indices`, rendered as `--apply_chat_template` would."""
    task.build_all_requests(samples=indices, apply_chat_template=chat,
                            chat_template=chat_renderer(tokenizer) if chat else None)
    return sorted(task.instances, key=lambda instance: instance.doc_id)


def decode(model, tokenizer, prompts: list[str], problems, batch_size: int) -> list:
    """Greedy decoding of every prompt; the prompts' longest common token prefix (instruction and worked
    examples) is prefilled once and shared, as the engine shares a doc's baseline/oracle prefix."""
    from kvinject.model_adapters.engine.decoding import DecodeRow, extend_caches, greedy_decode
    from kvinject.model_adapters.engine.tokens import StopRule, encode_prompt, eos_ids

    ends = eos_ids(tokenizer, model)
    ids = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    # every row keeps at least its last prompt token to feed
    shared = min(len(os.path.commonprefix(ids)), min(len(row) for row in ids) - 1)
    prefix = extend_caches(model, [None], [ids[0][:shared]])[0] if shared else None
    rows = [DecodeRow(prefix, tuple(row[shared:]), problem.max_new_tokens, StopRule(tokenizer, ends, problem.stop_sequences))
            for row, problem in zip(ids, problems)]
    results = []
    for start in range(0, len(rows), batch_size):
        results.extend(greedy_decode(model, rows[start:start + batch_size]))
    return results


def output_record(tokenizer, result, stops) -> dict:
    """One decoded output as the card records it: text cut at the first stop, token count, stop reason."""
    from kvinject.model_adapters.engine.tokens import decode_generated, truncate_at_stop

    return {"text": truncate_at_stop(decode_generated(tokenizer, result.new_ids), stops),
            "n_tokens": len(result.new_ids), "stop_reason": result.stop_reason}


def score(records: list[dict], task) -> None:
    """Mark each output correct or not with the task's matcher: the baseline against the original answer,
    the oracle against the alternative answer."""
    docs = {doc["id"]: doc for doc in task.test_docs()}
    for record in records:
        doc = docs[record["id"]]
        record["baseline"]["correct"] = bool(task.answer_matcher(record["baseline"]["text"], doc)["old"])
        record["oracle"]["correct"] = bool(task.answer_matcher(record["oracle"]["text"], doc)["new"])


def wilson_interval(successes: int, trials: int) -> list[float]:
    """95% Wilson score interval of a binomial proportion (docs as independent trials)."""
    from scipy.stats import binomtest

    interval = binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return [round(interval.low, 4), round(interval.high, 4)]


def summarise(records: list[dict], points) -> dict:
    """Accuracies over all docs, injected shares over changed docs, and both per variation type."""
    def rates(group: list[dict]) -> dict:
        changed = [r for r in group if r["variation_type"] != "identical"]
        accuracies = {}
        for condition in ("baseline", "oracle"):
            correct = sum(r[condition]["correct"] for r in group)
            accuracies[f"{condition}_accuracy"] = correct / len(group)
            accuracies[f"{condition}_accuracy_ci95"] = wilson_interval(correct, len(group))
        return {
            "n_docs": len(group),
            **accuracies,
            "n_changed": len(changed),
            **{f"injected_share@{n}": (sum(r["baseline"]["n_tokens"] > n for r in changed) / len(changed)
                                       if changed else None) for n in points},
            "median_baseline_tokens": sorted(r["baseline"]["n_tokens"] for r in group)[len(group) // 2],
        }

    by_type = defaultdict(list)
    for record in records:
        by_type[record["variation_type"]].append(record)
    return {"all": rates(records), **{name: rates(group) for name, group in sorted(by_type.items())}}


def main(argv=None) -> int:
    """Measure (or `--merge` shard outputs), write the card JSON to --output and print its summary; exit code 0."""
    args = parse_args(argv)
    if args.merge:
        card = merge(args.merge, load_task())
        args.output.write_text(json.dumps(card, indent=1))
        print(json.dumps({key: value for key, value in card.items() if key != "records"}, indent=1))
        return 0
    from kvinject.model_adapters.harness_model import problem_from_request
    from kvinject.model_adapters.loading import load_model_and_tokenizer
    from kvinject.model_adapters.model_args import parse_model_args

    model_args = parse_model_args({"pretrained": args.model, "device": args.device, "injection_points": args.points})
    model, tokenizer, _ = load_model_and_tokenizer(model_args)
    task = load_task()
    indices = shard(pick(list(task.test_docs()), args.per_type), args.shard)
    instances = requests(task, indices, args.chat, tokenizer)
    problems = [problem_from_request(model_args, TASK, i.doc, i.args[0], i.args[1]) for i in instances]
    started = time.perf_counter()
    baselines = decode(model, tokenizer, [p.original_prompt for p in problems], problems, args.batch_size)
    oracles = decode(model, tokenizer, [p.alternative_prompt for p in problems], problems, args.batch_size)
    records = [
        {"id": instance.doc["id"], "variation_type": instance.doc["variation_type"],
         "question_kind": instance.doc["question_kind"], "domain": instance.doc["domain"],
         "baseline": output_record(tokenizer, baseline, problem.stop_sequences),
         "oracle": output_record(tokenizer, oracle, problem.stop_sequences)}
        for instance, problem, baseline, oracle in zip(instances, problems, baselines, oracles)
    ]
    args.output.write_text(json.dumps({"model": args.model, "records": records}))  # kept if scoring fails
    score(records, task)
    summary = {
        "model": args.model, "chat_template": args.chat, "points": args.points, "docs": len(records),
        "seconds": round(time.perf_counter() - started, 1),
        "command": "python -m kvinject.adaptation_tasks.adaptation_update.measure_card " + " ".join(sys.argv[1:] if argv is None else argv),
        "summary": summarise(records, args.points),
    }
    args.output.write_text(json.dumps({**summary, "records": records}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
