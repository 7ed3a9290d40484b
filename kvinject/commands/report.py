"""``kvinject report DIR... --output_path OUT``: leaderboard, adaptation curves and per-problem JSON.

Reads lm-eval output folders (results_<date>.json and the traces beside them) and writes
    OUT/leaderboard.md, leaderboard.tex, leaderboard.csv
    OUT/curves/<task>.png and .svg         (needs traces)
    OUT/problems/<model>/<task>/<index>.json   one per problem, the original study's format (needs traces)
    OUT/index.html                         one self-contained page: leaderboard, curves, problem browser
Nothing here loads a model; see reports/README.md for every rule.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from kvinject.commands.common import injection_points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kvinject report``: the run folders, the output folder and the table, label and curve settings."""
    parser.add_argument("folders", nargs="+", metavar="DIR",
                        help="lm-eval --output_path folders (or model folders inside them); searched recursively")
    parser.add_argument("--output_path", required=True, help="folder for the report (created)")
    parser.add_argument("--sort_by", default=None,
                        help="leaderboard measure to rank by, e.g. adaptation_score@5 (default: the first column)")
    parser.add_argument("--points", default=None,
                        help="injection points shown in the leaderboard, e.g. 5,10 (default: all)")
    parser.add_argument("--digits", type=int, default=3, help="decimals in the Markdown and LaTeX tables")
    parser.add_argument("--label_thresholds", default=None,
                        help="JSON object overriding the per-problem label thresholds, e.g. "
                             "'{\"excellent_latency\": 3}' (see reports/README.md)")
    parser.add_argument("--bootstrap_resamples", type=int, default=1000, help="for the curves' intervals")
    parser.add_argument("--confidence_level", type=float, default=0.95, help="of the curves' intervals")
    parser.add_argument("--seed", type=int, default=0, help="seeds the curves' bootstrap")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _points(text: str | None):
    return None if text is None else set(injection_points(text, "--points"))


def run(args: argparse.Namespace) -> int:
    """Write the leaderboard (md, tex, csv), each task's curves and per-problem JSON, and index.html under
    --output_path; 2 for a bad argument, 1 if a task failed, else 0."""
    from kvinject.reports.leaderboard import build_leaderboard, model_labels
    from kvinject.reports.per_problem import LabelThresholds
    from kvinject.reports.runs import find_runs

    try:
        thresholds = LabelThresholds.from_mapping(json.loads(args.label_thresholds or "{}"))
        points = _points(args.points)
        runs = find_runs(args.folders)
        board = build_leaderboard(runs, args.sort_by, points=points, digits=args.digits)
    except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
        print(f"kvinject report: {error}", file=sys.stderr)
        return 2
    out = Path(args.output_path)
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in (("md", board.markdown()), ("tex", board.latex()), ("csv", board.csv())):
        (out / f"leaderboard.{suffix}").write_text(text, encoding="utf-8")
    written = [out / "leaderboard.md", out / "leaderboard.tex", out / "leaderboard.csv"]

    labels = model_labels(runs)
    traced = [run for run in runs if run.trace_paths]
    for run in runs:
        if not run.trace_paths:
            print(f"kvinject report: {run.results_path}: no traces beside it; leaderboard only "
                  "(index.html shows its logged samples, if any, without token colouring)", file=sys.stderr)
    tasks = sorted({task for run in traced for task in run.tasks})
    failures = 0
    page = {"curves": {}, "problems": []}
    for task in tasks:
        try:
            written += _curves_and_problems(task, traced, labels, thresholds, args, out, page)
        except (ValueError, TypeError, KeyError) as error:   # one bad trace costs its task, not the report
            print(f"kvinject report: {task}: {error}", file=sys.stderr)
            failures += 1
    failures += _untraced_problems(runs, labels, page)
    written.append(_html_page(board, runs, labels, page, out))
    print(board.markdown())
    print(f"wrote {len(written)} files under {out}")
    return 1 if failures else 0


def _curves_and_problems(task, runs, labels, thresholds, args, out: Path, page: dict) -> list[Path]:
    """Curves and per-problem JSON of one task; its curves and problems are added to `page`."""
    from kvinject.metrics import AdaptationSettings
    from kvinject.reports import html_page
    from kvinject.reports.curves import task_curves
    from kvinject.reports.per_problem import problem_reports
    from kvinject.reports.plotting import draw_curves

    task_runs = [run for run in runs if task in run.tasks and run.traces(task)]
    if not task_runs:
        return []
    config = task_runs[0].results["configs"][task]
    settings = AdaptationSettings.from_mapping((config.get("metadata") or {}).get("adaptation"))
    curves = task_curves({labels[run]: run.traces(task) for run in task_runs}, settings,
                         args.bootstrap_resamples, args.confidence_level, args.seed)
    written = []
    if curves:
        models = ", ".join(labels[run] for run in task_runs)
        written += draw_curves(curves, f"Adaptation after a KV-cache injection: {task} ({models})",
                               out / "curves" / task, settings.adapted_threshold, args.confidence_level)
        page["curves"][task] = html_page.curves_data(curves, settings, args.confidence_level)
    else:
        print(f"kvinject report: {task}: no curves: no changed-problem run was injected at any point "
              "(each baseline stopped before its injection point; the traces' not_injected_reason "
              "says when)", file=sys.stderr)
    for run in task_runs:
        folder = out / "problems" / _safe(labels[run]) / task
        folder.mkdir(parents=True, exist_ok=True)
        reports = problem_reports(run, task, thresholds)
        for report in reports:
            path = folder / f"{report['problem_index']:05d}_{_safe(report['doc_id'])}.json"
            path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            written.append(path)
        tokenizer, note = _tokenizer(run, page)
        page["problems"] += html_page.run_problems(run, task, labels[run], settings, reports, tokenizer, note)
    return written


def _tokenizer(run, page: dict):
    """The run's tokenizer for the page's token texts (loaded once per run), or None and why not."""
    from kvinject.reports.html_page import load_tokenizer

    cache = page.setdefault("tokenizers", {})
    if run not in cache:
        cache[run] = load_tokenizer(run)
        if cache[run][0] is None:
            print(f"kvinject report: {run.results_path}: {cache[run][1]}; index.html shows token numbers "
                  "instead of token texts", file=sys.stderr)
    return cache[run]


def _untraced_problems(runs, labels, page: dict) -> int:
    """Adds the problems of the runs without traces (their logged samples: outputs and answers
    only) to `page`; returns the number of tasks that failed."""
    from kvinject.reports.html_page import sample_problems

    failures = 0
    for run in runs:
        for task in run.tasks if not run.trace_paths else ():
            try:
                page["problems"] += sample_problems(run, task, labels[run])
            except (ValueError, TypeError, KeyError) as error:   # costs the run's samples, not the page
                print(f"kvinject report: {run.results_path}: {task}: {error}", file=sys.stderr)
                failures += 1
    return failures


def _html_page(board, runs, labels, page: dict, out: Path) -> Path:
    """OUT/index.html: the leaderboard, the curves and every problem of `page`."""
    from kvinject.reports import html_page

    data = html_page.page_data(f"kvinject report: {', '.join(sorted({labels[run] for run in runs}))}",
                               html_page.leaderboard_data(board), page["curves"], page["problems"], board.notes)
    path = out / "index.html"
    path.write_text(html_page.render_page(data), encoding="utf-8")
    return path
