"""``kvinject study FILE.yaml``: run a study's lm-eval runs in order, then the report and the comparisons.

Resumable: a run whose folder holds a finished marker (``study_run.json``, written after lm-eval
exits 0) for the same command is skipped; any other run is (re)started, and its docs already in
the per-doc result store are reused, not recomputed, so a killed study continues where it stopped.
``--dry_run`` prints the runs' lm-eval commands and an estimated time from a timed first doc of
each run (``--no_timing``: commands only). The file format: kvinject/study.py.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKER = "study_run.json"


class StudyError(Exception):
    """A run failed: the study stops (finished docs stay in the result store)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kvinject study``: the study file, --dry_run and the comparisons' resampling settings."""
    parser.add_argument("study", metavar="FILE.yaml", help="the study file (format: kvinject/study.py, README)")
    parser.add_argument("--dry_run", action="store_true",
                        help="print each run's lm-eval command and an estimated time; run nothing")
    parser.add_argument("--no_timing", action="store_true",
                        help="with --dry_run: skip timing a first doc of each run (no model is loaded)")
    parser.add_argument("--results_only", action="store_true",
                        help="run nothing: write the report, the comparisons and the findings tables of the runs "
                             "that finished (a comparison waits until both its runs have)")
    parser.add_argument("--bootstrap_resamples", type=int, default=2000, help="of the comparisons' intervals")
    parser.add_argument("--seed", type=int, default=0, help="of the comparisons' bootstrap and permutations")


def run(args: argparse.Namespace) -> int:
    """Run the study's runs (or print them with --dry_run), then its report and comparisons; 2 for a bad study
    file, 1 if a run failed, else the report's or the comparisons' status."""
    from kvinject.study import load_study

    try:
        study = load_study(args.study)
    except ValueError as error:
        print(f"kvinject study: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        try:
            return dry_run(study, timing=not args.no_timing)
        except ValueError as error:   # a task or model argument the timing could not use
            print(f"kvinject study: {error}", file=sys.stderr)
            return 2
    if not args.results_only:
        try:
            for index, study_run in enumerate(study.runs, start=1):
                run_one(study, study_run, f"[{index}/{len(study.runs)}]")
        except StudyError as error:
            print(f"kvinject study: {error}", file=sys.stderr)
            return 1
    return write_results(study, study.output_path, args.bootstrap_resamples, args.seed)


def write_results(study, output_path: Path, resamples: int = 2000, seed: int = 0) -> int:
    """The report (<output_path>/report), the comparisons (<output_path>/comparisons) and the findings
    tables (<output_path>/findings.md) of the study's finished runs; 2 if a comparison was refused or
    no run has finished."""
    finished = [study_run for study_run in study.runs if finished_record(study, study_run) is not None]
    if not finished:
        print("kvinject study: no run has finished yet: nothing to report", file=sys.stderr)
        return 2
    status = write_report(study, finished, output_path)
    write_committed_leaderboard(study, finished, output_path)
    write_findings(study, finished, output_path)
    return write_comparisons(study, finished, output_path, resamples, seed) or status


def _committed_run(study, study_run):
    """The run as committed (results JSON and samples, no traces: reports.runs.CommittedRun)."""
    from kvinject.reports.comparison import one_run
    from kvinject.reports.runs import CommittedRun

    return CommittedRun(one_run(study_run.folder(study.output_path)).results_path)


def write_committed_leaderboard(study, runs, output_path: Path) -> None:
    """<output_path>/report/leaderboard.{md,tex,csv} again, from the committed files only: beside traces the
    report groups rows by the traces' injection settings, on a clean checkout by the model args, and the
    committed tables must be the ones a clean checkout regenerates."""
    from kvinject.reports.leaderboard import build_leaderboard

    board = build_leaderboard([_committed_run(study, r) for r in runs], None)
    for suffix, text in (("md", board.markdown()), ("tex", board.latex()), ("csv", board.csv())):
        (output_path / "report" / f"leaderboard.{suffix}").write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------------- runs

def finished_record(study, study_run) -> dict | None:
    """The run's marker when it finished with the same command and its results file is there."""
    path = study_run.folder(study.output_path) / MARKER
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    done = record.get("command") == study_run.shown_command(study.output_path) and Path(record["results_file"]).is_file()
    return record if done else None


def _set_aside(study, study_run) -> None:
    """Move what an unfinished or changed run left in its folder out of the runs/ tree, so the report
    and the comparisons never read it."""
    folder = study_run.folder(study.output_path)
    if folder.exists() and any(folder.iterdir()):
        aside = study.output_path / "superseded" / f"{study_run.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(aside)
        print(f"kvinject study: {study_run.name}: earlier output moved to {aside}", file=sys.stderr)


def machine() -> str:
    """The host name, architecture, CPU count and platform, as recorded in each run's marker."""
    return f"{platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"


def compress_samples(folder: Path) -> list[Path]:
    """gzip every lm-eval samples file under a run folder in place (``.jsonl`` -> ``.jsonl.gz``, no
    time stamp inside, so the bytes depend on the content only): a full report's samples shrink
    about 24 times (30 MB -> 1.3 MB for 200 adaptation_update docs), which keeps a study committable.
    reports/runs.Run.samples reads either form."""
    written = []
    for path in sorted(Path(folder).rglob("samples_*.jsonl")):
        target = path.with_name(path.name + ".gz")
        partial = target.with_suffix(".partial")
        with path.open("rb") as source, open(partial, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
            shutil.copyfileobj(source, compressed)
        partial.replace(target)
        path.unlink()
        written.append(target)
    return written


def run_one(study, study_run, position: str) -> dict:
    """Run one lm-eval run unless it already finished; returns its marker record."""
    from kvinject.reports.comparison import one_run

    record = finished_record(study, study_run)
    if record is not None:
        print(f"{position} {study_run.name}: finished earlier ({record['results_file']}); skipped")
        return record
    _set_aside(study, study_run)
    print(f"{position} {study_run.name}: {study_run.shown_command(study.output_path)}", flush=True)
    started = time.perf_counter()
    exit_code = subprocess.run(study_run.command(study.output_path)).returncode
    if exit_code != 0:
        raise StudyError(f"{study_run.name}: lm-eval failed (exit code {exit_code}); its finished docs are in the "
                         "result store: run the study again to resume")
    compress_samples(study_run.folder(study.output_path))
    try:
        results = one_run(study_run.folder(study.output_path))
    except ValueError as error:
        raise StudyError(f"{study_run.name}: {error}") from None
    config = results.results.get("config", {})
    record = {"command": study_run.shown_command(study.output_path), "results_file": str(results.results_path),
              "wall_seconds": round(time.perf_counter() - started, 1), "machine": machine(),
              "docs_computed": config.get("docs_computed"),
              "docs_reused_from_store": config.get("docs_reused_from_store"),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    marker = study_run.folder(study.output_path) / MARKER
    partial = marker.with_suffix(".partial")   # written whole, then renamed: a kill leaves no half marker
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.replace(marker)
    print(f"{position} {study_run.name}: done in {record['wall_seconds']} s ({record['docs_computed']} docs "
          f"computed, {record['docs_reused_from_store']} reused from the result store)", flush=True)
    return record


# ----------------------------------------------------------------------- report and comparisons

def _report_argv(study, runs=None, output_path: Path | None = None) -> list[str]:
    """`kvinject report` over the run folders (every run's by default) into <output_path>/report."""
    folders = [str(study_run.folder(study.output_path)) for study_run in (runs or study.runs)]
    return ["report", *folders, "--output_path", str((output_path or study.output_path) / "report")]


def write_report(study, runs, output_path: Path) -> int:
    """``kvinject report`` over the runs' folders into <output_path>/report; its exit status."""
    from kvinject import cli

    return cli.main(_report_argv(study, runs, output_path))


def write_findings(study, runs, output_path: Path) -> Path:
    """The findings tables of the runs (reports/findings.py) as <output_path>/findings.md."""
    from kvinject.reports.comparison import one_run
    from kvinject.reports.findings import findings_markdown

    path = output_path / "findings.md"
    path.write_text(findings_markdown({r.name: one_run(r.folder(study.output_path)) for r in runs}),
                    encoding="utf-8")
    print(f"findings: {path}")
    return path


def write_comparisons(study, runs, output_path: Path, resamples: int, seed: int) -> int:
    """Each comparison whose runs are all among ``runs`` into <output_path>/comparisons/<name>.{md,csv};
    2 if one is refused."""
    from kvinject.reports.comparison import Resampling, compare_points, compare_runs, write_comparison

    by_name = {study_run.name: study_run for study_run in runs}
    resampling = Resampling(resamples=resamples, seed=seed)
    status = 0
    for comparison in study.comparisons:
        waiting = [name for name in comparison.runs if name not in by_name]
        if waiting:
            print(f"comparison {comparison.name}: waits for {', '.join(waiting)}")
            continue
        try:
            compared = [_committed_run(study, by_name[name]) for name in comparison.runs]
            result = (compare_points(compared[0], *comparison.points, resampling) if comparison.points
                      else compare_runs(compared[0], compared[1], resampling))
        except ValueError as error:   # one refused comparison costs itself, not the others
            print(f"kvinject study: comparison {comparison.name}: {error}", file=sys.stderr)
            status = 2
            continue
        written = write_comparison(result, output_path / "comparisons", comparison.name)
        print(f"comparison {comparison.name}: {written[0]}")
    return status


# ------------------------------------------------------------------------------------ dry run

def dry_run(study, timing: bool) -> int:
    """Print every run's command (and, with timing, an estimate from one timed doc); run nothing."""
    total, pending = 0.0, 0
    timer = FirstDocTimer() if timing else None
    for index, study_run in enumerate(study.runs, start=1):
        done = finished_record(study, study_run) is not None
        line = f"[{index}/{len(study.runs)}] {study_run.name}: {'finished (skipped)' if done else 'to run'}"
        if timer is not None and not done:
            estimate, detail = timer.estimate(study_run)
            total += estimate
            line += f", about {_duration(estimate)} ({detail})"
        pending += not done
        print(line)
        print(f"    {study_run.shown_command(study.output_path)}")
    print(f"then: kvinject {' '.join(_report_argv(study))}")
    folders = {study_run.name: str(study_run.folder(study.output_path)) for study_run in study.runs}
    for comparison in study.comparisons:
        what = " ".join(folders[name] for name in comparison.runs)
        if comparison.points:
            what += f" --points {comparison.points[0]} {comparison.points[1]}"
        print(f"then: kvinject compare {what}  -> {study.output_path / 'comparisons' / comparison.name}.md, .csv")
    summary = f"{pending} of {len(study.runs)} runs to run"
    if timer is not None:
        summary += f", estimated {_duration(total)} in all on this machine"
    print(summary)
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class FirstDocTimer:
    """Times the model load and the first doc of a run in this process (no result store, traces in a
    temporary folder); the run's estimate is load + docs x that doc's time. One doc at batch size 1
    and its plain prompt (no chat template): a rough estimate, not a benchmark."""

    def __init__(self):
        self._models: dict[str, tuple] = {}
        self._folder = tempfile.mkdtemp(prefix="kvinject-study-timing-")

    def _model(self, model_args: dict):
        from kvinject.model_adapters.harness_model import KVInjectLM

        key = json.dumps(model_args, sort_keys=True, default=str)
        if key not in self._models:
            started = time.perf_counter()
            lm = KVInjectLM(**{**model_args, "result_store": "none", "trace_dir": self._folder, "batch_size": 1})
            self._models = {key: (lm, time.perf_counter() - started)}   # one model in memory at a time
        return self._models[key]

    def estimate(self, study_run) -> tuple[float, str]:
        from lm_eval.api.instance import Instance
        from lm_eval.tasks import TaskManager, get_task_dict

        manager = TaskManager(include_defaults=False, metadata=study_run.metadata or None)
        try:
            task = get_task_dict([study_run.task], manager)[study_run.task]
        except KeyError:
            raise ValueError(f"{study_run.name}: no task {study_run.task!r} (see `lm_eval ls tasks`)") from None
        docs = list(task.eval_docs)
        n_docs = len(docs) if study_run.limit is None else min(study_run.limit, len(docs))
        lm, load_seconds = self._model(study_run.model_args)
        gen_kwargs = {**dict(task.config.generation_kwargs or {}), **study_run.gen_kwargs}
        request = Instance(request_type="generate_until", doc=docs[0], arguments=(task.doc_to_text(docs[0]), gen_kwargs),
                           idx=0, metadata=(study_run.task, docs[0].get("id"), 1))
        started = time.perf_counter()
        lm.generate_until([request], disable_tqdm=True)
        doc_seconds = time.perf_counter() - started
        return (load_seconds + n_docs * doc_seconds,
                f"load {load_seconds:.1f} s + {n_docs} docs x {doc_seconds:.1f} s, timed on doc {docs[0].get('id')}")
