"""Find the runs in lm-eval output folders: each ``results_<date>.json`` with its traces and samples.

lm-eval writes ``results_<date>.json`` (and ``samples_<task>_<date>.jsonl`` with ``--log_samples``)
into ``<output_path>/<model>/``; kvinject copies the run's traces beside them as
``traces_<date>[_<k>].jsonl`` (compressed variants end in ``.jsonl.gz``). A run's files are matched
by that shared ``<date>``.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
from functools import cached_property
from pathlib import Path

from kvinject.metrics import AdaptationSettings
from kvinject.model_adapters.trace_log import read_traces

RESULTS_PREFIX, TRACES_PREFIX, SAMPLES_PREFIX, PRM_PREFIX = "results_", "traces_", "samples_", "prm_"


@dataclasses.dataclass(frozen=True)
class Run:
    """One lm-eval run: its results JSON and the trace / sample files written beside it."""

    results_path: Path

    @property
    def folder(self) -> Path:
        return self.results_path.parent

    @property
    def date_id(self) -> str:
        return self.results_path.stem[len(RESULTS_PREFIX):]

    @cached_property
    def results(self) -> dict:
        try:
            return json.loads(self.results_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read lm-eval results {self.results_path}: {error}") from error

    @property
    def model_name(self) -> str:
        """The model as lm-eval recorded it (`pretrained`)."""
        args = self.results.get("config", {}).get("model_args")
        fallback = args.get("pretrained") if isinstance(args, dict) else None
        return str(self.results.get("model_name") or fallback or self.folder.name)

    @property
    def model_args(self) -> dict:
        """--model_args as recorded; lm-eval keeps a `k=v,...` string when that was given."""
        args = self.results.get("config", {}).get("model_args") or {}
        if isinstance(args, str):
            args = dict(item.split("=", 1) for item in args.split(",") if "=" in item)
        return dict(args)

    def metric_settings(self, task: str) -> AdaptationSettings:
        """The metric settings the run aggregated ``task`` with (its config's metadata.adaptation)."""
        config = self.results.get("configs", {}).get(task, {})
        return AdaptationSettings.from_mapping((config.get("metadata") or {}).get("adaptation"))

    @property
    def tasks(self) -> list[str]:
        """The leaf tasks of the run (groups have no config of their own)."""
        return [task for task in self.results.get("configs", {}) if task in self.results.get("results", {})]

    @property
    def trace_paths(self) -> list[Path]:
        """``traces_<date>.jsonl``, ``traces_<date>_<k>.jsonl`` and compressed variants (``.jsonl.gz``)."""
        pattern = re.compile(rf"{TRACES_PREFIX}{re.escape(self.date_id)}(_[0-9]+)?\.jsonl(\.[a-z0-9]+)?")
        return sorted(p for p in self.folder.glob(f"{TRACES_PREFIX}*.jsonl*") if pattern.fullmatch(p.name))

    @cached_property
    def trace_records(self) -> list[dict]:
        """Every ``{"task", "trace"}`` record of the run, in the order written (read once)."""
        records = []
        for path in self.trace_paths:
            try:
                records += read_traces(path)
            except (OSError, ValueError, EOFError) as error:   # JSONDecodeError is a ValueError
                raise ValueError(f"cannot read traces {path}: {error}") from error
        return records

    def traces(self, task: str) -> list[dict]:
        return [record["trace"] for record in self.trace_records if record.get("task") == task]

    @property
    def prm_paths(self) -> list[Path]:
        """The deprecated PRM scorer's ``prm_<judge>_traces_<date>[_<k>].json`` (``kvinject prm``)."""
        pattern = re.compile(rf"{PRM_PREFIX}.+_{TRACES_PREFIX}{re.escape(self.date_id)}(_[0-9]+)?\.json")
        return sorted(p for p in self.folder.glob(f"{PRM_PREFIX}*.json") if pattern.fullmatch(p.name))

    @cached_property
    def prm_files(self) -> list[dict]:
        """The PRM JSON files of the run, as written (read once)."""
        found = []
        for path in self.prm_paths:
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError) as error:
                raise ValueError(f"cannot read PRM scores {path}: {error}") from error
        return found

    def samples(self, task: str) -> list[dict]:
        """lm-eval's logged samples of a task, as written or gzip-compressed (``.jsonl.gz``, as the
        study commits them); empty without --log_samples."""
        path = self.folder / f"{SAMPLES_PREFIX}{task}_{self.date_id}.jsonl"
        compressed = path.with_name(path.name + ".gz")
        if path.exists() and compressed.exists():
            raise ValueError(f"{self.folder}: both {path.name} and {compressed.name}: keep one")
        opened = gzip.open(compressed, "rt", encoding="utf-8") if compressed.exists() else (
            path.open(encoding="utf-8") if path.exists() else None)
        if opened is None:
            return []
        with opened as handle:
            return [json.loads(line) for line in handle if line.strip()]


@dataclasses.dataclass(frozen=True)
class CommittedRun(Run):
    """A run read as a study commits it, without its traces (results JSON and samples only): tables
    computed from it come out the same on a clean checkout as beside the traces."""

    @property
    def trace_paths(self) -> list[Path]:
        return []


def find_runs(folders: list[str | os.PathLike]) -> list[Run]:
    """Every run under the folders (searched recursively), in a stable order.

    Raises ValueError naming a folder that does not exist or holds no ``results_*.json``.
    """
    runs = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder (give lm-eval's --output_path or a model folder inside it)")
        found = sorted(folder.rglob(f"{RESULTS_PREFIX}*.json"))
        if not found:
            raise ValueError(f"{folder}: no lm-eval results_*.json found under it")
        runs += [Run(path) for path in found]
    return runs
