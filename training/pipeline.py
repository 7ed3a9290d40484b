"""``kvinject train`` end to end: task docs -> split -> examples from training docs -> fine-tune.

Output folder layout:
    train_config.json   every setting (TrainConfig)
    split.json          train and held-out doc ids; eval_samples.json for lm-eval's --samples
    examples.jsonl      the supervised examples (doc_id, input_ids, labels) and skipped.json
    checkpoints/        Trainer checkpoints (resumed from automatically)
    model/              the trained model (safetensors, LoRA merged, tokenizer): pretrained=<this folder>
    train_log.json      the Trainer's log history
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from kvinject.training.config import TrainConfig
from kvinject.training.examples import TrainingExample, build_examples
from kvinject.training.fine_tune import fine_tune
from kvinject.training.split import save_split, split_by_doc_id

logger = logging.getLogger(__name__)
EXAMPLES_FILE = "examples.jsonl"
SKIPPED_FILE = "skipped.json"


def load_task_docs(task_name: str) -> tuple[object, list[dict]]:
    """The lm-eval task object and its evaluation docs, in lm-eval's order (their indices are --samples')."""
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict([task_name], TaskManager())
    if task_name not in tasks:
        raise ValueError(f"task {task_name!r} is a group; give one adaptation task (e.g. adaptation_math)")
    task = tasks[task_name]
    return task, list(task.eval_docs)


def gold_solution(doc: dict) -> str:
    """A gold target in the task's answer format: the equation where the doc has one, then \\boxed{}."""
    answer = doc["alternative_answer"]
    equation = doc.get("alternative_equation")
    worked = f"{equation} = {answer}. " if equation else ""
    return f" {worked}The answer is \\boxed{{{answer}}}."


def task_problems(task, docs: list[dict], model_args, max_new_tokens: int):
    """Engine problems built exactly as ``--model kvinject`` builds them from lm-eval's requests."""
    from kvinject.model_adapters.harness_model import problem_from_request

    gen_kwargs = dict(task.config.generation_kwargs or {}, max_gen_toks=max_new_tokens)
    return [problem_from_request(model_args, task.config.task, doc, task.fewshot_context(doc, 0), gen_kwargs) for doc in docs]


def write_examples(examples: list[TrainingExample], path: Path) -> None:
    """Write the examples to ``path`` as JSON lines (doc_id, input_ids, labels)."""
    with path.open("w", encoding="utf-8") as handle:
        for e in examples:
            handle.write(json.dumps({"doc_id": e.doc_id, "input_ids": e.input_ids, "labels": e.labels}) + "\n")


def read_examples(path: Path) -> list[TrainingExample]:
    """The examples of a JSON lines file written by write_examples."""
    with path.open(encoding="utf-8") as handle:
        return [TrainingExample(**json.loads(line)) for line in handle if line.strip()]


def run_training(config: TrainConfig, output: Path, callbacks=(), split_only: bool = False) -> dict | None:
    """Run (or resume) a training run in ``output``; returns the training log. ``split_only``: write the
    config and the split (so the base model can be measured on the held-out docs first) and stop."""
    from lm_eval.utils import simple_parse_args_string

    from kvinject.model_adapters.loading import load_model_and_tokenizer
    from kvinject.model_adapters.model_args import parse_model_args

    config.check_resumable(output)
    config.save(output)
    # The examples are built at the training injection point (the budget check is against that point).
    model_args = parse_model_args({**simple_parse_args_string(config.model_args),
                                   "injection_points": [config.injection_point]})
    task, docs = load_task_docs(config.task)
    split = split_by_doc_id(config.task, [doc["id"] for doc in docs], config.eval_fraction, config.split_seed)
    save_split(split, output, config.eval_samples_limit)
    if split_only:
        return None
    train_ids = list(split.train_ids)[: config.max_train_docs]
    by_id = {str(doc["id"]): doc for doc in docs}
    train_docs = [by_id[doc_id] for doc_id in train_ids]
    model, tokenizer, _ = load_model_and_tokenizer(model_args)
    examples_path = output / EXAMPLES_FILE
    if examples_path.exists():  # a resumed run trains on exactly the examples it started with
        examples = read_examples(examples_path)
    else:
        examples, skipped = build_examples(
            model, tokenizer, task_problems(task, train_docs, model_args, config.max_new_tokens),
            config.injection_point, config.target, {str(d["id"]): gold_solution(d) for d in train_docs},
            config.generation_batch_size,
        )
        (output / SKIPPED_FILE).write_text(json.dumps(skipped, indent=1) + "\n")
        write_examples(examples, examples_path)
    split.check_disjoint(e.doc_id for e in examples)
    logger.info("%d training examples from %d training docs", len(examples), len(train_docs))
    return fine_tune(model, tokenizer, examples, config, output, callbacks=callbacks)
