"""Per-doc result store: finished traces survive a killed run and are reused when it is restarted.

One SQLite file (stdlib sqlite3, JSON values, no pickle) maps a doc key (run_fingerprint.doc_key:
model files, loading, settings, the doc's inputs, code version) to the doc's trace. Each batch is
written in one transaction, so a kill leaves either the whole batch or none of it. Every entry
carries the sha256 of its JSON; an entry that does not match it, does not parse or is not a valid
trace is recomputed, never served. A file that is not a database at all is moved aside.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path

from kvinject.trace_schema import validate_trace

logger = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS traces (key TEXT PRIMARY KEY, trace TEXT NOT NULL, sha256 TEXT NOT NULL)"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResultStore:
    """The SQLite store at ``path``: ``get_many(keys)`` returns the valid stored traces by key (a damaged
    entry is dropped and recomputed), ``put_many([(key, trace)])`` writes one batch in one transaction."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connection = self._open()
        except sqlite3.DatabaseError as error:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            logger.warning("result store %s is unreadable (%s); moved to %s, starting a new one", self.path, error, aside)
            self.path.rename(aside)
            self._connection = self._open()

    def _open(self) -> sqlite3.Connection:
        # Data-parallel ranks share the file: wait for another rank's write instead of failing.
        connection = sqlite3.connect(self.path, timeout=300)
        connection.execute(_SCHEMA)
        connection.execute("SELECT count(*) FROM traces").fetchone()  # reads the file: fails here if corrupt
        connection.commit()
        return connection

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        """The valid stored traces among ``keys``; corrupt entries are left out (and logged)."""
        found = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            rows = self._connection.execute(
                f"SELECT key, trace, sha256 FROM traces WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            for key, text, checksum in rows:
                try:
                    if _sha256(text) != checksum:
                        raise ValueError("checksum mismatch")
                    trace = json.loads(text)
                    validate_trace(trace)
                except ValueError as error:
                    logger.warning("result store %s: entry %s is corrupt (%s); recomputing it", self.path, key[:12], error)
                    continue
                found[key] = trace
        return found

    def put_many(self, items: list[tuple[str, dict]]) -> None:
        """Write all items or none (one transaction)."""
        rows = []
        for key, trace in items:
            text = json.dumps(trace, ensure_ascii=False, allow_nan=False)
            rows.append((key, text, _sha256(text)))
        with self._connection:  # commits on success, rolls back on any error
            self._connection.executemany("INSERT OR REPLACE INTO traces VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        return self._connection.execute("SELECT count(*) FROM traces").fetchone()[0]

    def close(self) -> None:
        self._connection.close()
