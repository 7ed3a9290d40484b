"""Traces written to disk as they are computed, so a crash later in a run loses nothing.

Each line is ``{"task": ..., "trace": <trace dict>}``. At the end of an lm-eval run with
``--output_path`` the start-up hook copies the file beside ``results_<date>.json``
(kvinject/harness_checks.py), so every number can be rebuilt from it without the model.
"""
import json
import os
import time
from pathlib import Path

from kvinject.paths import user_cache_dir

_OPEN_LOGS = []


class TraceLog:
    """Append-only JSONL of one model adapter's traces."""

    def __init__(self, folder: str | os.PathLike | None = None, published: bool = True):
        base = Path(folder) if folder else user_cache_dir() / "traces"
        base.mkdir(parents=True, exist_ok=True)
        self.path = base / f"traces_{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}_{len(_OPEN_LOGS)}.jsonl"
        self._handle = self.path.open("a", encoding="utf-8")
        self.published = published  # False: a data-parallel rank's spool, merged into rank 0's file
        _OPEN_LOGS.append(self)

    def append(self, task: str, trace: dict) -> None:
        self._handle.write(json.dumps({"task": task, "trace": trace}, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())


def open_trace_logs() -> list[TraceLog]:
    """The trace files of this process's runs, to be copied beside the results."""
    return [log for log in _OPEN_LOGS if log.published]


def read_traces(path: str | os.PathLike) -> list[dict]:
    """The ``{"task", "trace"}`` records of a trace file, in the order they were written."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
