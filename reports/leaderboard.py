"""The leaderboard: one row per model x task, the headline measures per injection point.

Every value is read from the results JSON as lm-eval wrote it, never recomputed. Measures are
found generically: a result key ``<metric>[@<N>],<filter>`` is a measure; ``<metric>_ci_low[@<N>]``
/ ``<metric>_ci_high[@<N>]`` (or the suffix after ``@<N>``) are its interval and
``<metric>[@<N>]_stderr`` its standard error. Which metrics make the table is HEADLINE_MEASURES.

Rows are ranked only against rows whose settings match (same task, docs, injection settings,
generation and metric settings; see `comparison_settings`); rows that differ form separate groups
and the table says which settings differ.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math

from kvinject.metrics.keys import LEADERBOARD, format_key, parse_key, split_interval
from kvinject.metrics.values import readable
from kvinject.model_adapters.run_fingerprint import MODEL_ARGS, UNFINGERPRINTED_ARGS
from kvinject.strict_json import decoded_value

from .runs import Run

# The measures shown, in this order; each appears once per injection point the runs report
# (kvinject.metrics.keys.LEADERBOARD, the headline measures that tell models apart).
HEADLINE_MEASURES = LEADERBOARD
# Deprecated legacy PRM scores (`kvinject prm`, prm_*.json beside the traces): the mean step score of
# these conditions becomes a column prm_<condition>[@<N>], copied from the file's summary.
PRM_CONDITIONS = ("oracle", "injection", "noise")
FILTER = "none"  # lm-eval's filter name for tasks without filters
STDERR_SUFFIX = "_stderr"
# --model_args that name the model or where/how fast it runs, not what is measured (the run
# fingerprint's own lists); every other argument (and any unknown one) is a measurement setting that
# must match for rows to be compared.
MODEL_IDENTITY_ARGS = frozenset(MODEL_ARGS + UNFINGERPRINTED_ARGS)


@dataclasses.dataclass(frozen=True)
class Measure:
    """One measure of one task as the results JSON has it (None where the JSON has no value)."""

    metric: str
    point: int | None
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    stderr: float | None = None

    @property
    def name(self) -> str:
        return self.metric if self.point is None else f"{self.metric}@{self.point}"


def parse_measure_name(name: str) -> tuple[str, int | None, str | None] | None:
    """(metric, injection point, companion) of a result name without its filter, or None.

    companion: None for the measure itself, "ci_low", "ci_high" or "stderr"; a name with two
    companions (e.g. the stderr of an interval end) is not a measure and gives None. The key grammar is
    kvinject.metrics.keys.parse_key's; lm-eval appends ``_stderr`` after ``@<N>``, where an interval end
    may stand too (``<metric>@<N>_ci_low``).
    """
    head, at, tail = name.partition("@")
    end, companions = (tail if at else head), []
    for suffix in (STDERR_SUFFIX, "_ci_low", "_ci_high"):
        if end.endswith(suffix):
            end, companions = end[: -len(suffix)], companions + [suffix[1:]]
    try:
        parsed = parse_key(head + at + end if at else end)
    except ValueError:
        return None
    stat, interval_end = split_interval(parsed.stat)
    companions += [interval_end] if interval_end else []
    if len(companions) > 1:
        return None
    metric = format_key(parsed.metric, None, stat, parsed.layer)
    return metric, parsed.injection_point, companions[0] if companions else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_measures(task_results: dict, filter_name: str = FILTER) -> dict[str, Measure]:
    """Every measure of one task's results block, keyed by its name (``<metric>@<N>``)."""
    parts: dict[tuple[str, int | None], dict] = {}
    for key, value in task_results.items():
        name, _, key_filter = key.rpartition(",")
        parsed = parse_measure_name(name) if key_filter == filter_name else None
        if parsed is None:
            continue
        metric, point, companion = parsed
        if companion is None and (value is None or _number(value) is not None):
            # null: not estimable, or a median not reached (strict_json.py says which)
            value = decoded_value(name, value, task_results, f",{filter_name}")
        if _number(value) is not None:
            parts.setdefault((metric, point), {})[companion or "value"] = (
                value if isinstance(value, float) else _number(value))
    measures = {}
    for (metric, point), found in parts.items():
        if "value" in found:
            measure = Measure(metric, point, found["value"], found.get("ci_low"), found.get("ci_high"),
                              found.get("stderr"))
            measures[measure.name] = measure
    return measures


def comparison_settings(run: Run, task: str) -> dict:
    """What must match for two rows to be compared: the docs, the effective injection settings
    (from the traces), the generation, few-shot, prompt and metric settings of the task, and the
    measurement --model_args (all but MODEL_IDENTITY_ARGS)."""
    results, config = run.results, run.results.get("configs", {}).get(task, {})
    try:
        traces, unreadable = run.traces(task), None
    except ValueError as error:   # the table comes from the results JSON; say why settings are unknown
        traces, unreadable = [], str(error)
    settings = {
        "generation_kwargs": config.get("generation_kwargs"),
        "num_fewshot": results.get("n-shot", {}).get(task, config.get("num_fewshot")),
        "metric settings (metadata.adaptation)": (config.get("metadata") or {}).get("adaptation"),
        "task version": results.get("versions", {}).get(task),
        "docs": sorted(t["doc_id"] for t in traces) if traces
        else results.get("n-samples", {}).get(task, {}).get("effective"),
        "injection settings (trace)": sorted({json.dumps(t["settings"], sort_keys=True) for t in traces}),
        "chat template applied": results.get("chat_template") is not None,
        "system_instruction": results.get("system_instruction"),
        "fewshot_as_multiturn": results.get("fewshot_as_multiturn"),
    }
    if unreadable:
        settings["traces"] = unreadable
    trace_keys = set(traces[0]["settings"]) if traces else set()
    for key, value in sorted(run.model_args.items()):
        if key not in MODEL_IDENTITY_ARGS and key not in trace_keys:
            settings[f"model arg {key}"] = value
    return settings


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    task: str
    group: str          # rows share a group letter iff their comparison settings match
    rank: int | None    # 1 = best by the sort measure within the group; None without a value
    n_docs: int | None
    results_file: str
    measures: dict[str, Measure]


@dataclasses.dataclass(frozen=True)
class Leaderboard:
    rows: list[Row]
    columns: list[str]          # measure names, e.g. "adaptation_score@5"
    sort_by: str
    notes: list[str]
    digits: int = 3
    prm_judges: tuple[str, ...] = ()   # judges of the PRM columns, named in the caption

    # ------------------------------------------------------------------------------ formats
    def _cell(self, measure: Measure | None) -> str:
        if measure is None:
            return "–"
        text = _fixed(measure.value, self.digits)
        if measure.ci_low is not None and measure.ci_high is not None:
            return f"{text} [{_fixed(measure.ci_low, self.digits)}, {_fixed(measure.ci_high, self.digits)}]"
        if measure.stderr is not None:
            return f"{text} ± {_fixed(measure.stderr, self.digits)}"
        return text

    def _caption(self) -> str:
        return (f"One row per model x task, ranked by {self.sort_by} within each group of rows run with the "
                f"same settings. Cells: value [interval] as in the results JSON (± a standard error where "
                f"no interval was reported), rounded to {self.digits} decimals; leaderboard.csv has them exactly."
                + (f" prm_* columns: DEPRECATED legacy PRM mean step score [interval] of `kvinject prm`, judge "
                   f"{' / '.join(self.prm_judges)}; empty where a run has no PRM file."
                   if self.prm_judges else ""))

    def markdown(self) -> str:
        header = ["model", "task", "group", "rank", "docs", *self.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            cells = [row.model, row.task, row.group, _text(row.rank), _text(row.n_docs),
                     *(self._cell(row.measures.get(column)) for column in self.columns)]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        notes = "\n".join(f"- {note}" for note in self.notes)
        return f"{self._caption()}\n\n" + "\n".join(lines) + (f"\n\n{notes}" if notes else "") + "\n"

    def latex(self) -> str:
        header = ["model", "task", "group", "rank", "docs", *self.columns]
        lines = [r"% needs \usepackage{booktabs}", r"\begin{table}", r"\centering", r"\small",
                 r"\begin{tabular}{" + "l" * 5 + "r" * len(self.columns) + "}", r"\toprule",
                 " & ".join(map(_latex_escape, header)) + r" \\", r"\midrule"]
        for row in self.rows:
            cells = [row.model, row.task, row.group, _text(row.rank), _text(row.n_docs),
                     *(self._cell(row.measures.get(column)) for column in self.columns)]
            lines.append(" & ".join(map(_latex_escape, cells)) + r" \\")
        caption = " ".join([self._caption(), *self.notes])
        lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _latex_escape(caption) + "}",
                  r"\end{table}"]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Exact values: Python writes floats with repr, which reads back to the same double."""
        header = ["model", "task", "group", "rank", "n_docs", "results_file"]
        for column in self.columns:
            header += [column, f"{column}_ci_low", f"{column}_ci_high", f"{column}_stderr"]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in self.rows:
            cells = [row.model, row.task, row.group, _text(row.rank, ""), _text(row.n_docs, ""), row.results_file]
            for column in self.columns:
                measure = row.measures.get(column)
                cells += ["", "", "", ""] if measure is None else [
                    _text(measure.value, ""), _text(measure.ci_low, ""), _text(measure.ci_high, ""),
                    _text(measure.stderr, "")]
            writer.writerow(cells)
        return out.getvalue()


def _fixed(value: float, digits: int) -> str:
    return f"{readable(value):.{digits}f}"   # "not estimable" / "not reached" when not finite


def _text(value, missing: str = "–") -> str:
    return missing if value is None else repr(value) if isinstance(value, float) else str(value)


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "±": r"$\pm$", "–": "--"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in str(text))


# ---------------------------------------------------------------------------------- building


def model_labels(runs: list[Run]) -> dict[Run, str]:
    """The model name, plus the model args that tell apart runs of the same model on a shared task
    (runs on different tasks never share a row, so they need no detail)."""
    labels = {}
    for run in runs:
        same = [other for other in runs
                if other.model_name == run.model_name and set(other.tasks) & set(run.tasks)]
        if len(same) == 1:
            labels[run] = run.model_name
            continue
        differing = sorted(key for key in {k for other in same for k in other.model_args}
                           if key != "pretrained" and len({str(o.model_args.get(key)) for o in same}) > 1)
        detail = ",".join(f"{key}={run.model_args.get(key)}" for key in differing) or run.date_id
        labels[run] = f"{run.model_name} ({detail})"
    return labels


def _settings_groups(entries: list[tuple[Run, str]]) -> tuple[dict, list[str]]:
    """Group letter per (run, task) and notes naming the settings that differ between groups."""
    groups: dict[tuple, dict] = {}
    letters, notes = {}, []
    for run, task in entries:
        settings = comparison_settings(run, task)
        signature = (task, json.dumps(settings, sort_keys=True, default=str))
        if signature not in groups:
            groups[signature] = {"letter": None, "settings": settings, "task": task}
        letters[(run, task)] = signature
    by_task: dict[str, list] = {}
    for signature, group in groups.items():
        by_task.setdefault(group["task"], []).append(group)
    for task, task_groups in by_task.items():
        for index, group in enumerate(task_groups):
            group["letter"] = chr(ord("A") + index) if index < 26 else f"G{index}"
        if len(task_groups) > 1:
            reference = task_groups[0]
            for other in task_groups[1:]:
                differing = sorted(key for key in {*reference["settings"], *other["settings"]}
                                   if reference["settings"].get(key) != other["settings"].get(key))
                notes.append(f"{task}: groups {reference['letter']} and {other['letter']} are not compared: "
                             f"their settings differ in {', '.join(differing)}.")
        else:
            notes.append(f"{task}: every row was run with the same settings (group {task_groups[0]['letter']}).")
    return {key: groups[signature]["letter"] for key, signature in letters.items()}, notes


def prm_measures(run: Run, task: str) -> tuple[set[str], dict[str, Measure]]:
    """The judges and the PRM mean-step measures (``prm_injection@5``...) of one task of a run, copied
    from its prm_*.json summaries; conditions without steps (mean None) are left out."""
    judges, measures = set(), {}
    for data in run.prm_files:
        for row in (data.get("summary") or {}).get(task, []):
            kind, _, point = str(row.get("condition")).partition("@")
            if kind not in PRM_CONDITIONS or _number(row.get("mean")) is None:
                continue
            low, high = row.get("mean_interval") or (None, None)
            measure = Measure(f"prm_{kind}", int(point) if point else None, row["mean"], _number(low), _number(high))
            judges.add(str((data.get("judge") or {}).get("model_args")))
            measures[measure.name] = measure
    return judges, measures


def _add_prm(entries, measures, points) -> tuple[list[str], list[str], tuple[str, ...]]:
    """Adds the PRM measures to each entry's measures; returns their columns, notes and judges."""
    notes, by_task = [], {}
    for run, task in entries:
        judges, found = prm_measures(run, task)
        if len(judges) > 1:
            notes.append(f"{task}: {run.results_path} has PRM scores of several judges ({', '.join(sorted(judges))}); "
                         "its PRM cells are left empty.")
            continue
        measures[(run, task)].update(found)
        by_task.setdefault(task, set()).update(judges)
    for task, judges in by_task.items():
        if len(judges) > 1:
            notes.append(f"{task}: PRM columns are not compared: rows were scored by different judges "
                         f"({', '.join(sorted(judges))}).")
    present = {name: m for found in measures.values() for name, m in found.items() if m.metric.startswith("prm_")}
    columns = sorted((name for name, m in present.items() if points is None or m.point is None or m.point in points),
                     key=lambda name: (PRM_CONDITIONS.index(present[name].metric[4:]), present[name].point or 0))
    return columns, notes, tuple(sorted(set().union(*by_task.values()))) if by_task else ()


def build_leaderboard(runs: list[Run], sort_by: str | None = None, headline=HEADLINE_MEASURES,
                      points=None, digits: int = 3) -> Leaderboard:
    """The leaderboard of every (run, task); sort_by is a measure name such as ``adaptation_score@5``
    (default: the first column). Best first, by the direction the results JSON records for that
    key (higher_is_better); rows without it last. points: the injection points shown (default all)."""
    entries = [(run, task) for run in runs for task in run.tasks]
    measures = {(run, task): read_measures(run.results["results"][task]) for run, task in entries}
    present = {name: m for found in measures.values() for name, m in found.items()}
    columns = sorted((name for name, m in present.items()
                      if m.metric in headline and (points is None or m.point is None or m.point in points)),
                     key=lambda name: (headline.index(present[name].metric), present[name].point or 0))
    sort_by = sort_by or (columns[0] if columns else "")
    prm_columns, prm_notes, prm_judges = _add_prm(entries, measures, points)
    columns += prm_columns
    present = {name: m for found in measures.values() for name, m in found.items()}
    notes = []
    missing = [metric for metric in headline if not any(m.metric == metric for m in present.values())]
    if missing:
        notes.append(f"headline measures not in any results JSON: {', '.join(missing)}.")
    if sort_by and sort_by not in present:
        raise ValueError(f"sort measure {sort_by!r} is in no results JSON; measures found: "
                         f"{', '.join(sorted(present))}")
    groups, group_notes = _settings_groups(entries)
    labels = model_labels(runs)

    def higher_is_better(run: Run, task: str) -> bool:
        return bool(run.results.get("higher_is_better", {}).get(task, {}).get(sort_by, True))

    def order(entry):
        run, task = entry
        measure = measures[entry].get(sort_by)
        value = None if measure is None or math.isnan(measure.value) else measure.value
        signed = 0.0 if value is None else (-value if higher_is_better(run, task) else value)
        return task, groups[entry], value is None, signed, labels[run]

    rows, seen = [], {}
    for entry in sorted(entries, key=order):
        run, task = entry
        _, group, missing, signed, _ = order(entry)
        # competition ranking within the group: equal values share a rank ("1224")
        earlier = seen.setdefault((task, group), [])
        rank = None if missing else 1 + sum(1 for value in earlier if value < signed)
        if not missing:
            earlier.append(signed)
        n_docs = run.results.get("n-samples", {}).get(task, {}).get("effective")
        rows.append(Row(labels[run], task, groups[entry], rank, n_docs, str(run.results_path), measures[entry]))
    return Leaderboard(rows, columns, sort_by, notes + group_notes + prm_notes, digits, prm_judges)
