"""``kvinject prm RESULTS_DIR --judge MODEL`` (DEPRECATED, kept for comparison with the original study).

Scores each reasoning step of every condition in the run's traces (``traces_*.jsonl*`` under
RESULTS_DIR) as P(good) - P(bad) from a causal-LM judge, and writes beside each traces file
``prm_<judge>_<traces file name without .jsonl[.gz]>.json`` (e.g. ``prm_smollm2-135m_traces_<date>.json``) (every step's score, per-doc mean/min, per-condition summaries
with bootstrap intervals over docs) and prints a table per task. See README "Legacy PRM scorer".
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from kvinject.commands import UsageError
from kvinject.commands.common import existing_folder, in_range
from kvinject.model_adapters.prm_judge import DEFAULT_BAD, DEFAULT_GOOD, DEFAULT_TEMPLATE

DEPRECATION = ("the PRM scorer is deprecated: it is kept only to compare with the original study; the "
               "adaptation metrics (detection latency, oracle convergence, ...) are the supported measures")


def add_arguments(parser) -> None:
    """The flags of ``kvinject prm``: the results folder, the judge and its prompt, and the bootstrap settings."""
    parser.add_argument("results_dir", type=Path, help="an lm-eval --output_path folder of a --model kvinject run")
    parser.add_argument("--judge", required=True,
                        help="judge model: anything pretrained= accepts (e.g. smollm2-135m), or full model args "
                             "'pretrained=...,dtype=...'")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="judge prompt with {problem}, {previous}, {step}")
    parser.add_argument("--good", default=DEFAULT_GOOD, help=f"the 'good' answer token (default {DEFAULT_GOOD!r})")
    parser.add_argument("--bad", default=DEFAULT_BAD, help=f"the 'bad' answer token (default {DEFAULT_BAD!r})")
    parser.add_argument("--batch_size", type=int, default=8, help="judge prompts per forward pass")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples over docs")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval confidence level")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def _judge_model_args(judge: str) -> dict:
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(judge) if "=" in judge else {"pretrained": judge}


def _file_label(pretrained: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(pretrained).name or pretrained)


def _trace_files(args) -> list[Path]:
    """The run's trace files, after checking every flag value (UsageError names the bad one)."""
    in_range(args.batch_size, "--batch_size", 1, float("inf"))
    in_range(args.resamples, "--resamples", 1, float("inf"))
    in_range(args.confidence, "--confidence", 0, 1, open_low=True, open_high=True)
    folder = existing_folder(args.results_dir, "results_dir")
    trace_files = sorted(p for p in folder.rglob("traces_*.jsonl*") if p.is_file())
    if not trace_files:
        raise UsageError(f"no traces_*.jsonl* file under {folder}; run lm_eval --model kvinject with --output_path "
                         "there first")
    return trace_files


def run(args) -> int:
    """(Deprecated) Score each trace file's reasoning steps with the judge and write prm_<judge>_<traces>.json
    beside it; 0 (a bad flag raises UsageError)."""
    from tqdm import tqdm

    from kvinject.model_adapters.loading import load_model_and_tokenizer
    from kvinject.model_adapters.model_args import parse_model_args
    from kvinject.model_adapters.prm_judge import PRMJudge
    from kvinject.model_adapters.trace_log import read_traces
    from kvinject.prm.aggregate import condition_summaries, format_table
    from kvinject.prm.steps import split_steps
    from kvinject.prm.trace_scores import judge_prompts, score_records

    trace_files = _trace_files(args)
    warnings.warn(DEPRECATION, DeprecationWarning, stacklevel=1)
    print(f"note: {DEPRECATION}")
    judge_args = parse_model_args(_judge_model_args(args.judge))
    model, tokenizer, _ = load_model_and_tokenizer(judge_args)
    judge = PRMJudge(model, tokenizer, args.template, args.good, args.bad, args.batch_size)
    for path in trace_files:
        records = read_traces(path)
        with tqdm(total=len(judge_prompts(records, judge)), desc=f"PRM steps of {path.name}") as progress:
            scores = score_records(records, judge, progress)
        summaries = {task: condition_summaries(docs, args.resamples, args.confidence, args.seed)
                     for task, docs in scores.items()}
        traces_stem = re.sub(r"\.jsonl(\.[A-Za-z0-9]+)?$", "", path.name)  # keeps the run's full date id
        out = path.parent / f"prm_{_file_label(judge_args.pretrained)}_{traces_stem}.json"
        out.write_text(json.dumps({
            "deprecated": DEPRECATION,
            "traces": path.name,
            "judge": {"model_args": args.judge, "template": args.template, "good": args.good, "bad": args.bad},
            "step_rule": split_steps.__module__ + ".split_steps: newlines, then '.', '!' or '?' followed by whitespace",
            "score": "P(good) - P(bad), the two answer tokens renormalised over the pair, in [-1, 1]",
            "intervals": {"method": "bootstrap over docs", "resamples": args.resamples,
                          "confidence_level": args.confidence, "seed": args.seed},
            "summary": summaries,
            "docs": scores,
        }, indent=1) + "\n")
        for task, rows in summaries.items():
            print(f"\n{task} ({path.name}), judge {judge_args.pretrained}:\n{format_table(rows)}")
        print(f"\nwrote {out}")
    return 0
