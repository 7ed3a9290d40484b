"""``kvinject compare RUN_A RUN_B`` / ``kvinject compare RUN --points 5 15``: paired comparison by doc.

Per task and injection point, the paired difference (B - A) of each headline measure over the docs
both runs share, its bootstrap interval over docs and a sign-flip permutation p-value, with the
number of paired docs (reports/comparison.py; statistics in metrics/paired.py). Reads the runs'
results JSON and --log_samples samples only; nothing loads a model.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kvinject compare``: two runs, or one run with --points, and the resampling settings."""
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="two lm-eval output folders (A, then B), or one with --points; each must hold one run")
    parser.add_argument("--points", nargs=2, type=int, metavar=("N_A", "N_B"), default=None,
                        help="compare injection@N_B against injection@N_A of one run, paired by doc")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks to compare (default: every shared task)")
    parser.add_argument("--output_path", default=None,
                        help="folder for comparison.md and comparison.csv (default: print the Markdown only)")
    parser.add_argument("--bootstrap_resamples", type=int, default=2000, help="for the intervals")
    parser.add_argument("--permutation_resamples", type=int, default=9999, help="for the sign-flip p-values")
    parser.add_argument("--confidence_level", type=float, default=0.95, help="of the intervals")
    parser.add_argument("--seed", type=int, default=0, help="seeds the bootstrap and the permutations")
    parser.add_argument("--digits", type=int, default=3, help="decimals in the Markdown table")


def comparison_from_args(args: argparse.Namespace):
    """The Comparison the arguments ask for; ValueError for a user error."""
    from kvinject.reports.comparison import Resampling, compare_points, compare_runs, one_run

    if args.bootstrap_resamples < 1 or args.permutation_resamples < 1:
        raise ValueError("--bootstrap_resamples and --permutation_resamples must be at least 1")
    if not 0 < args.confidence_level < 1:
        raise ValueError(f"--confidence_level {args.confidence_level}: must be between 0 and 1")
    resampling = Resampling(args.bootstrap_resamples, args.permutation_resamples, args.confidence_level, args.seed)
    tasks = [task for task in args.tasks.split(",") if task] if args.tasks else None
    if args.points is not None:
        if len(args.runs) != 1:
            raise ValueError(f"--points compares two injection points of one run; got {len(args.runs)} folders")
        if args.points[0] == args.points[1]:
            raise ValueError(f"--points {args.points[0]} {args.points[1]}: give two different injection points")
        return compare_points(one_run(args.runs[0]), *args.points, resampling, args.digits, tasks)
    if len(args.runs) != 2:
        raise ValueError(f"give two run folders (A and B), or one with --points N_A N_B; got {len(args.runs)}")
    return compare_runs(one_run(args.runs[0]), one_run(args.runs[1]), resampling, args.digits, tasks)


def run(args: argparse.Namespace) -> int:
    """Print the comparison as Markdown and write it under --output_path if given; 2 for a user error, else 0."""
    from kvinject.reports.comparison import write_comparison

    try:
        comparison = comparison_from_args(args)
    except ValueError as error:
        print(f"kvinject compare: {error}", file=sys.stderr)
        return 2
    print(comparison.markdown())
    if args.output_path:
        written = write_comparison(comparison, args.output_path)
        print(f"wrote {', '.join(map(str, written))}")
    return 0
