"""``kvinject analyze``: the original study's flags, run through lm-eval (``lm_eval.simple_evaluate``).

    kvinject analyze --model M --dataset FILE --limit K --injection_points 5,10,15 \\
        --output_path DIR --device D

is the same evaluation as ``lm_eval --model kvinject --model_args pretrained=M,injection_points=5:10:15,
device=D --tasks adaptation_pairs --metadata '{"dataset_path": "FILE"}' --limit K --output_path DIR
--log_samples``: one code path. It writes lm-eval's results and samples under DIR/<model>/, the traces
beside them (the start-up hook's trace export), and then ``kvinject report`` over DIR into DIR/report
(leaderboard, curves, per-problem JSON). ``--task`` runs a built-in task (e.g. adaptation_math) instead.
The original study's spellings ``--num_problems`` and ``--output_dir`` are accepted as aliases.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvinject.commands import UsageError
from kvinject.commands.common import extra_model_args, injection_points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kvinject analyze`` (the original study's spellings as aliases)."""
    parser.add_argument("--model", required=True, help="pretrained model: Hub id, local folder or offline alias (smollm2-135m)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="your pairs file, JSON or JSON lines (format: adaptation_tasks/README.md)")
    source.add_argument("--task", help="a built-in adaptation task instead, e.g. adaptation_math")
    parser.add_argument("--limit", "--num_problems", dest="limit", type=int, default=None,
                        help="evaluate the first K problems (--num_problems: the original study's spelling)")
    parser.add_argument("--injection_points", default="5,10,15", help="generated tokens before the injection, e.g. 5,10,15")
    parser.add_argument("--output_path", "--output_dir", dest="output_path", required=True,
                        help="folder for lm-eval's results, the traces and the report (--output_dir: the original "
                             "study's spelling)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch_size", default="1", help="docs per batch, or auto")
    parser.add_argument("--max_gen_toks", type=int, default=None, help="generation budget per condition (default: the task's)")
    parser.add_argument("--model_args", default="", help="further kvinject model args as k=v,k=v (see README)")
    parser.add_argument("--no_report", action="store_true", help="stop after lm-eval's results and the traces")


def evaluation_request(args: argparse.Namespace) -> dict:
    """The keyword arguments of lm_eval.simple_evaluate for these flags (checked before any model loads)."""
    from kvinject.model_adapters.model_args import parse_model_args

    model_args = {"pretrained": args.model, "injection_points": injection_points(args.injection_points),
                  "device": args.device, "batch_size": args.batch_size, **extra_model_args(args.model_args)}
    parse_model_args(model_args)  # ModelArgsError names a bad argument before anything loads
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: must be >= 1")
    request = {"model": "kvinject", "model_args": model_args, "limit": args.limit, "log_samples": True}
    if args.dataset:
        from kvinject.adaptation_tasks.adaptation_pairs.data import read_pairs

        path = Path(args.dataset).resolve()
        read_pairs(path)  # a malformed file fails now, naming the line and field
        request.update(tasks=["adaptation_pairs"], metadata={"dataset_path": str(path)})
    else:
        request["tasks"] = [args.task]
    if args.max_gen_toks is not None:
        request["gen_kwargs"] = {"max_gen_toks": args.max_gen_toks}
    return request


def run(args: argparse.Namespace) -> int:
    """Run lm-eval on the pairs file or task, save its results and traces, then the report; the exit status
    (2 for a bad flag value, the report's otherwise)."""
    try:
        request = evaluation_request(args)
    except (ValueError, OSError) as error:
        print(f"kvinject analyze: {error}", file=sys.stderr)
        return 2
    from kvinject import _autoload

    _autoload.install(force=True)  # the trace export, even where the .pth hook is disabled
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    out = Path(args.output_path)
    tracker = EvaluationTracker(output_path=str(out))
    results = lm_eval.simple_evaluate(**request, evaluation_tracker=tracker)
    if results is None:  # a non-zero rank of a data-parallel run
        return 0
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    from lm_eval.utils import make_table

    print(make_table(results))
    print(f"kvinject analyze: lm-eval results and traces under {out}")
    if args.no_report:
        return 0
    return write_report(out, out / "report")


def write_report(results_dir: Path, report_dir: Path) -> int:
    """``kvinject report results_dir --output_path report_dir`` (kvinject/commands/report.py)."""
    from kvinject.commands import report

    parser = argparse.ArgumentParser(prog="kvinject report")
    report.add_arguments(parser)
    return int(report.run(parser.parse_args([str(results_dir), "--output_path", str(report_dir)])) or 0)
