"""Paired comparison of two runs, or of two injection points of one run, on the docs they share.

Per task and injection point, each headline measure (kvinject.metrics.keys.HEADLINE) is compared
doc by doc: the per-doc values lm-eval logged with --log_samples (``Run.samples``) are turned into
the numbers compared by ``metrics.paired.per_doc_values`` and summarised by
``metrics.paired.paired_difference`` (B - A, bootstrap interval over docs, sign-flip p-value).
Run-level measures (``n_docs``, ``detection_calibrated``) are shown side by side, not tested.

Refused, with the reason: runs without logged samples, runs that share no doc, a shared doc whose
content differs (lm-eval's ``doc_hash``), and runs whose generation or metric settings differ
(MUST_MATCH of ``leaderboard.comparison_settings``). Other settings may differ (that is what is
compared: model, strategy, prompt format ...); the output lists them.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

from kvinject.metrics import AdaptationSettings
from kvinject.metrics import keys as K
from kvinject.metrics.paired import (
    PairedDifference,
    headline_key,
    headline_names,
    is_per_point,
    is_run_level,
    paired_difference,
    per_doc_values,
    run_level_value,
)
from kvinject.metrics.resampling import adjust_pvalues

from .leaderboard import comparison_settings, model_labels
from .runs import Run, find_runs

# comparison_settings entries that must be equal for a paired comparison to mean anything: what the
# model was asked to generate and how the measures are computed. Every other entry may differ.
MUST_MATCH = ("generation_kwargs", "num_fewshot", "metric settings (metadata.adaptation)", "task version")
ALLOWED_DIFFERENCES_SHOWN = 8   # settings listed per task in the header; more are summarised


@dataclasses.dataclass(frozen=True)
class Resampling:
    resamples: int = 2000
    permutation_resamples: int = 9999
    confidence_level: float = 0.95
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Row:
    task: str
    measure: str          # "injection_accuracy@5"; in a points comparison "injection_accuracy@5->15"
    key_a: str
    key_b: str
    result: PairedDifference | None          # paired measures
    run_level: tuple[float, float] | None    # run-level measures: (A, B)
    pvalue_holm: float = math.nan


@dataclasses.dataclass(frozen=True)
class Comparison:
    label_a: str
    label_b: str
    rows: list[Row]
    notes: list[str]
    resampling: Resampling
    digits: int = 3

    def _number(self, value: float) -> str:
        return "–" if value is None or math.isnan(value) else f"{value:.{self.digits}f}"

    def _pvalue(self, value: float) -> str:
        return "–" if math.isnan(value) else f"{value:.{max(self.digits, 3)}g}"

    def markdown(self) -> str:
        level = f"{100 * self.resampling.confidence_level:g}%"
        lines = ["# Paired comparison: B − A", "", f"- A: {self.label_a}", f"- B: {self.label_b}",
                 *(f"- {note}" for note in self.notes), "",
                 f"B − A: mean over the paired docs of each doc's difference; {level} interval: expanded "
                 "percentile bootstrap over docs (– with fewer than 10 paired docs or fewer than 5 that "
                 "differ); p: two-sided sign-flip permutation test, p (Holm): adjusted over every tested "
                 "row of this file (kvinject.metrics.paired, metrics/README.md). Run-level rows (counts, "
                 "calibration flags) are not tested.", "",
                 f"| task | measure | docs | differing | A | B | B − A | {level} interval | p | p (Holm) |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for row in self.rows:
            if row.result is None:
                a, b = row.run_level
                cells = [row.task, row.measure, "run-level", "", self._number(a), self._number(b),
                         self._number(b - a), "", "", ""]
            else:
                r = row.result
                interval = "–" if math.isnan(r.ci_low) else f"[{self._number(r.ci_low)}, {self._number(r.ci_high)}]"
                cells = [row.task, row.measure, str(r.n_pairs), str(r.n_nonzero), self._number(r.mean_a),
                         self._number(r.mean_b), self._number(r.difference), interval, self._pvalue(r.pvalue),
                         self._pvalue(row.pvalue_holm)]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Exact values (Python's float repr); run-level rows leave the test columns empty."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["task", "measure", "key_a", "key_b", "kind", "n_pairs", "n_differing", "a", "b",
                         "difference", "ci_low", "ci_high", "pvalue", "pvalue_holm"])
        for row in self.rows:
            if row.result is None:
                a, b = row.run_level
                writer.writerow([row.task, row.measure, row.key_a, row.key_b, "run-level", "", "", repr(a),
                                 repr(b), repr(b - a), "", "", "", ""])
                continue
            r = row.result
            writer.writerow([row.task, row.measure, row.key_a, row.key_b, "paired", r.n_pairs, r.n_nonzero,
                             repr(r.mean_a), repr(r.mean_b), repr(r.difference), repr(r.ci_low),
                             repr(r.ci_high), repr(r.pvalue), repr(row.pvalue_holm)])
        return out.getvalue()


def one_run(folder) -> Run:
    """The single run under an lm-eval output folder; ValueError when there is none or several."""
    runs = find_runs([folder])
    if len(runs) > 1:
        raise ValueError(f"{folder}: holds {len(runs)} runs ({', '.join(str(r.results_path) for r in runs)}); "
                         "give the folder of one run")
    return runs[0]


def logged_docs(run: Run, task: str) -> dict[str, dict]:
    """{doc id: logged sample} of one task (the doc's own ``id``, else lm-eval's doc index)."""
    samples = run.samples(task)
    if not samples:
        raise ValueError(f"{run.results_path}: no logged samples of {task} beside it; run lm-eval with "
                         "--log_samples to compare per doc")
    docs = {}
    for sample in samples:
        doc = sample.get("doc")
        doc_id = str(doc["id"]) if isinstance(doc, dict) and "id" in doc else f"#{sample['doc_id']}"
        docs[doc_id] = sample
    return docs


def _shared_docs(task: str, a: dict, b: dict) -> list[str]:
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError(f"{task}: the runs share no doc (A has {len(a)}, B {len(b)}); a paired comparison "
                         "needs the same docs")
    for doc in shared:
        if a[doc].get("doc_hash") != b[doc].get("doc_hash"):
            raise ValueError(f"{task}: doc {doc} differs between the runs (doc_hash {a[doc].get('doc_hash')} vs "
                             f"{b[doc].get('doc_hash')}): not the same docs")
    return shared


def _settings_notes(task: str, run_a: Run, run_b: Run) -> list[str]:
    """Refuse different MUST_MATCH settings; name the other settings that differ."""
    settings_a, settings_b = comparison_settings(run_a, task), comparison_settings(run_b, task)
    for key in MUST_MATCH:
        if settings_a.get(key) != settings_b.get(key):
            raise ValueError(f"{task}: the runs' {key} differ ({json.dumps(settings_a.get(key), default=str)} vs "
                             f"{json.dumps(settings_b.get(key), default=str)}): not comparable")
    differing = [text for key in sorted({*settings_a, *settings_b} - {"docs"})
                 for text in _differences(key, settings_a.get(key), settings_b.get(key))]
    if not differing:
        return []
    shown = differing[:ALLOWED_DIFFERENCES_SHOWN]
    more = len(differing) - len(shown)
    return [f"{task}: settings that differ (A vs B): " + "; ".join(shown) + (f"; and {more} more" if more else "")]


def _differences(key: str, a, b) -> list[str]:
    """'key: a vs b' for a differing setting; the traces' settings (one JSON object per run, as
    comparison_settings gives them) entry by entry."""
    if a == b:
        return []
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) == 1:
        a, b = json.loads(a[0]), json.loads(b[0])
        return [f"{name}: {a.get(name)!r} vs {b.get(name)!r}" for name in sorted({*a, *b}) if a.get(name) != b.get(name)]
    return [f"{key}: {a!r} vs {b!r}"]


def _points(docs: dict) -> set[int]:
    found = set()
    for sample in docs.values():
        for key in sample.get("metrics", []):
            try:
                point = K.parse_key(key).injection_point
            except ValueError:
                continue
            if point is not None:
                found.add(point)
    return found


def _row(task: str, measure: str, key_a: str, key_b: str, docs_a: dict, docs_b: dict, shared: set[str],
         settings: AdaptationSettings, resampling: Resampling) -> Row | None:
    """One measure compared over the shared docs; None when neither side has the key."""
    logged_a = {doc: sample[key_a] for doc, sample in docs_a.items() if key_a in sample}
    logged_b = {doc: sample[key_b] for doc, sample in docs_b.items() if key_b in sample}
    if not (logged_a or logged_b):
        return None
    if is_run_level(key_a):
        if K.parse_key(key_a).spec.kind == K.COUNT:   # the docs counted among the shared ones
            logged_a = {doc: value for doc, value in logged_a.items() if doc in shared}
            logged_b = {doc: value for doc, value in logged_b.items() if doc in shared}
        values = tuple(run_level_value(key, logged, settings) if logged else math.nan
                       for key, logged in ((key_a, logged_a), (key_b, logged_b)))
        return Row(task, measure, key_a, key_b, None, values)
    # Per-doc values from every logged doc of each run (detection: the run's own calibration).
    values_a, values_b = (per_doc_values(key, logged, settings) if logged else {}
                          for key, logged in ((key_a, logged_a), (key_b, logged_b)))
    paired = sorted(doc for doc in shared if doc in values_a and doc in values_b)
    result = paired_difference([values_a[d] for d in paired], [values_b[d] for d in paired],
                               resampling.resamples, resampling.permutation_resamples,
                               resampling.confidence_level, resampling.seed)
    return Row(task, measure, key_a, key_b, result, None)


def _with_holm(rows: list[Row]) -> list[Row]:
    tested = [i for i, row in enumerate(rows) if row.result is not None and row.result.n_pairs]
    adjusted = adjust_pvalues([rows[i].result.pvalue for i in tested], "holm")
    rows = list(rows)
    for i, value in zip(tested, adjusted):
        rows[i] = dataclasses.replace(rows[i], pvalue_holm=float(value))
    return rows


def compare_runs(run_a: Run, run_b: Run, resampling: Resampling = Resampling(), digits: int = 3,
                 tasks: list[str] | None = None) -> Comparison:
    """Run B against run A on every task both ran (or `tasks`), at every injection point both have."""
    shared_tasks = [task for task in run_a.tasks if task in run_b.tasks and (tasks is None or task in tasks)]
    if not shared_tasks:
        raise ValueError(f"the runs share no task (A: {', '.join(run_a.tasks) or 'none'}; "
                         f"B: {', '.join(run_b.tasks) or 'none'})")
    labels = model_labels([run_a, run_b]) if run_a.results_path != run_b.results_path else {run_a: run_a.model_name}
    rows, notes = [], []
    for task in shared_tasks:
        notes += _settings_notes(task, run_a, run_b)
        docs_a, docs_b = logged_docs(run_a, task), logged_docs(run_b, task)
        shared = _shared_docs(task, docs_a, docs_b)
        notes.append(f"{task}: {len(shared)} docs in both runs (A has {len(docs_a)}, B {len(docs_b)})")
        settings = run_a.metric_settings(task)
        points = sorted(_points(docs_a) & _points(docs_b))
        for name in headline_names():
            for key in ([headline_key(name, p) for p in points] if is_per_point(name) else [name]):
                row = _row(task, key, key, key, docs_a, docs_b, set(shared), settings, resampling)
                if row is not None:
                    rows.append(row)
    return Comparison(f"{labels[run_a]} ({run_a.results_path})", f"{labels[run_b]} ({run_b.results_path})",
                      _with_holm(rows), notes, resampling, digits)


def compare_points(run: Run, point_a: int, point_b: int, resampling: Resampling = Resampling(),
                   digits: int = 3, tasks: list[str] | None = None) -> Comparison:
    """Injection at point_b against injection at point_a in one run, paired by doc."""
    rows, notes = [], []
    chosen = [task for task in run.tasks if tasks is None or task in tasks]
    if not chosen:
        raise ValueError(f"{run.results_path}: no such task (the run has {', '.join(run.tasks) or 'none'})")
    for task in chosen:
        docs = logged_docs(run, task)
        found = _points(docs)
        missing = [p for p in (point_a, point_b) if p not in found]
        if missing:
            raise ValueError(f"{task}: --points {point_a} {point_b}: the run has no injection point "
                             f"{', '.join(map(str, missing))} (it has {', '.join(map(str, sorted(found))) or 'none'})")
        notes.append(f"{task}: {len(docs)} docs")
        settings = run.metric_settings(task)
        for name in (name for name in headline_names() if is_per_point(name)):
            key_a, key_b = headline_key(name, point_a), headline_key(name, point_b)
            row = _row(task, f"{key_a}→{point_b}", key_a, key_b, docs, docs, set(docs), settings, resampling)
            if row is not None:
                rows.append(row)
    label = f"{run.model_name} ({run.results_path})"
    return Comparison(f"injection@{point_a} of {label}", f"injection@{point_b} of {label}", _with_holm(rows),
                      notes, resampling, digits)


def write_comparison(comparison: Comparison, folder, stem: str = "comparison") -> list:
    """FOLDER/<stem>.md and .csv (folder created); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in (("md", comparison.markdown()), ("csv", comparison.csv())):
        path = folder / f"{stem}.{suffix}"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
