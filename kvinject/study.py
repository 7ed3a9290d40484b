"""A study file: the lm-eval runs of a study, the report over them and the comparisons between them.

    output_path: results/my-study      # runs: <output_path>/runs/<run>/, report: <output_path>/report/,
                                       # comparisons: <output_path>/comparisons/<name>.md and .csv
    result_store: null                 # optional: the per-doc result store every run uses (default:
                                       # kvinject's, <cache folder>/results.sqlite)
    model_args: {device: cpu}          # optional: --model_args shared by every run (a run's own win)
    runs:                              # run in this order; each entry is tasks x the `vary` product
      - name: smollm2-135m             # run names: <name>-<task>[-<value of each varied arg>]
        model_args: {pretrained: smollm2-135m}
        vary: {strategy: [append, replace]}   # optional: one run per combination of these model args
        tasks: [adaptation_semantic]   # one lm-eval run per task
        limit: 200                     # optional: lm-eval --limit (default: every doc)
        apply_chat_template: false     # optional: lm-eval --apply_chat_template
        gen_kwargs: {max_gen_toks: 64} # optional: lm-eval --gen_kwargs
        metadata: {}                   # optional: lm-eval --metadata (e.g. {"adaptation": {...}})
    comparisons:                       # optional, after the report (kvinject compare)
      - {a: smollm2-135m-adaptation_semantic-append, b: smollm2-135m-adaptation_semantic-replace}
      - {run: smollm2-135m-adaptation_semantic-append, points: [5, 15]}

Every run logs samples (--log_samples: `kvinject compare` pairs docs from them). Pure parsing and
command building; kvinject/commands/study.py runs them.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shlex
import sys
from pathlib import Path

TOP_FIELDS = {"output_path", "result_store", "model_args", "runs", "comparisons"}
RUN_FIELDS = {"name", "model_args", "vary", "tasks", "limit", "apply_chat_template", "gen_kwargs", "metadata"}
_PLAIN_VALUE = re.compile(r"^[^,=\s]+$")   # what a k=v --model_args value can hold


@dataclasses.dataclass(frozen=True)
class StudyRun:
    name: str
    task: str
    model_args: dict
    limit: int | None = None
    apply_chat_template: bool = False
    gen_kwargs: dict = dataclasses.field(default_factory=dict)
    metadata: dict = dataclasses.field(default_factory=dict)

    def folder(self, output_path: Path) -> Path:
        return output_path / "runs" / self.name

    def command(self, output_path: Path) -> list[str]:
        """The lm-eval command line of the run (as `lm_eval`, run with this Python)."""
        command = [sys.executable, "-m", "lm_eval", "--model", "kvinject",
                   "--model_args", _model_args_text(self.name, self.model_args), "--tasks", self.task,
                   "--output_path", str(self.folder(output_path)), "--log_samples"]
        if self.limit is not None:
            command += ["--limit", str(self.limit)]
        if self.apply_chat_template:
            command.append("--apply_chat_template")
        if self.gen_kwargs:
            command += ["--gen_kwargs", ",".join(f"{k}={_text(self.name, k, v)}" for k, v in self.gen_kwargs.items())]
        if self.metadata:
            command += ["--metadata", json.dumps(self.metadata, sort_keys=True)]
        return command

    def shown_command(self, output_path: Path) -> str:
        return shlex.join(["lm_eval", *self.command(output_path)[3:]])


@dataclasses.dataclass(frozen=True)
class StudyComparison:
    name: str                       # file stem under <output_path>/comparisons/
    runs: tuple[str, ...]           # (a, b), or (run,) with points
    points: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class Study:
    output_path: Path
    runs: list[StudyRun]
    comparisons: list[StudyComparison]


def _text(run: str, key: str, value) -> str:
    """A --model_args / --gen_kwargs value as text: lists joined with ':', booleans lower case."""
    if isinstance(value, (list, tuple)):
        text = ":".join(str(item) for item in value)
    elif isinstance(value, bool):
        text = str(value).lower()
    else:
        text = str(value)
    if not _PLAIN_VALUE.match(text):
        raise ValueError(f"run {run}: {key}={text!r}: a value in a study file cannot hold ',', '=' or spaces")
    return text


def _model_args_text(run: str, model_args: dict) -> str:
    return ",".join(f"{key}={_text(run, key, value)}" for key, value in model_args.items())


def _mapping(where: str, value, default=None) -> dict:
    if value is None:
        return dict(default or {})
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _unknown(where: str, entry: dict, valid: set[str]) -> None:
    unknown = sorted(set(entry) - valid)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")


def _expand(index: int, entry, shared: dict, result_store: str | None) -> list[StudyRun]:
    where = f"runs[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping with name and tasks, got {entry!r}")
    _unknown(where, entry, RUN_FIELDS)
    name, tasks, limit = entry.get("name"), entry.get("tasks"), entry.get("limit")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"{where}: name {name!r}: give a name of letters, digits, '.', '_' or '-'")
    if isinstance(tasks, str):
        tasks = [tasks]
    if not tasks or not all(isinstance(task, str) for task in tasks):
        raise ValueError(f"{where} ({name}): tasks: give a list of task names")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"{where} ({name}): limit {limit!r}: give a whole number of docs >= 1, or leave it out")
    vary = _mapping(f"{where} ({name}) vary", entry.get("vary"))
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where} ({name}): vary.{key}: give a non-empty list of values")
    model_args = {**shared, **_mapping(f"{where} ({name}) model_args", entry.get("model_args"))}
    if result_store is not None:
        model_args.setdefault("result_store", result_store)
    runs = []
    for task in tasks:
        for combination in itertools.product(*vary.values()):
            varied = dict(zip(vary, combination))
            suffix = "".join(f"-{_text(name, key, value)}" for key, value in varied.items())
            runs.append(StudyRun(
                name=f"{name}-{task}{suffix}", task=task, model_args={**model_args, **varied}, limit=limit,
                apply_chat_template=bool(entry.get("apply_chat_template", False)),
                gen_kwargs=_mapping(f"{where} ({name}) gen_kwargs", entry.get("gen_kwargs")),
                metadata=_mapping(f"{where} ({name}) metadata", entry.get("metadata"))))
    return runs


def _comparison(index: int, entry, names: set[str]) -> StudyComparison:
    where = f"comparisons[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected {{a: RUN, b: RUN}} or {{run: RUN, points: [N, M]}}, got {entry!r}")
    if set(entry) == {"a", "b"}:
        runs, points = (entry["a"], entry["b"]), None
    elif set(entry) == {"run", "points"}:
        points = entry["points"]
        if not (isinstance(points, list) and len(points) == 2 and all(isinstance(p, int) for p in points)
                and points[0] != points[1]):
            raise ValueError(f"{where}: points {points!r}: give two different injection points, e.g. [5, 15]")
        runs, points = (entry["run"],), tuple(points)
    else:
        raise ValueError(f"{where}: give either a and b, or run and points (got {', '.join(sorted(entry))})")
    for run in runs:
        if run not in names:
            raise ValueError(f"{where}: no run named {run!r}; the study's runs: {', '.join(sorted(names))}")
    name = f"{runs[0]}__vs__{runs[1]}" if points is None else f"{runs[0]}__at{points[1]}_vs_{points[0]}"
    return StudyComparison(name, runs, points)


def parse_study(data, base: Path = Path(".")) -> Study:
    """The study a parsed YAML document describes; ValueError naming the field at fault.
    base: the folder a relative output_path is taken from (the current folder, as lm-eval's)."""
    if not isinstance(data, dict):
        raise ValueError("a study file is a mapping with output_path and runs")
    _unknown("study", data, TOP_FIELDS)
    if not isinstance(data.get("output_path"), str):
        raise ValueError("study: output_path: give the folder for the runs, the report and the comparisons")
    if not isinstance(data.get("runs"), list) or not data["runs"]:
        raise ValueError("study: runs: give a list of runs")
    shared = _mapping("study model_args", data.get("model_args"))
    runs = [run for index, entry in enumerate(data["runs"])
            for run in _expand(index, entry, shared, data.get("result_store"))]
    seen = set()
    for run in runs:
        if run.name in seen:
            raise ValueError(f"study: two runs are named {run.name!r}; give their entries different names")
        seen.add(run.name)
    comparisons = [_comparison(index, entry, seen) for index, entry in enumerate(data.get("comparisons") or [])]
    return Study(base / data["output_path"], runs, comparisons)


def load_study(path) -> Study:
    """The study in the YAML file ``path``, parsed and checked; ValueError naming the path otherwise."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such study file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    try:
        return parse_study(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
