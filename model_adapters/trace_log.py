"""Trace files: written as they are computed (a crash loses nothing), read back by ``read_traces``.

A trace file holds one record per doc, ``{"task": ..., "trace": <trace dict>}``, as gzip-compressed
JSON lines (``.jsonl.gz``). To shrink the per-token series about sevenfold without changing any
number, every list of floats (or rectangular list of float rows) is stored packed::

    {"__floats__": "f4" | "f8", "shape": [T] | [T, L], "data": base64(byte-planes of the array)}

``f4`` is used only when every value survives the float32 round trip bit for bit (the engine's series
are float32 computations, so they always do); anything else keeps float64. The bytes are split into
planes (all first bytes, then all second bytes, ...) because the sign/exponent planes of nearby
values repeat and then compress well. ``read_traces`` undoes all of this and also reads the older
uncompressed ``.jsonl`` files, so it is the one reader for the report, the tests and everything else.

Each ``TraceLog.flush`` appends the buffered records as one gzip member and closes the file again
(a gzip file may hold several members), so no handle stays open between batches.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from kvinject.paths import user_cache_dir

PACKED_KEY = "__floats__"
SUFFIX = ".jsonl.gz"


class TraceLog:
    """Append-only trace file of one model adapter; the adapter owns it (no module-level registry)."""

    def __init__(self, folder: str | os.PathLike | None = None):
        base = Path(folder) if folder else user_cache_dir() / "traces"
        base.mkdir(parents=True, exist_ok=True)
        # id(self) keeps two logs of one process apart when they open within the same second
        self.path = base / f"traces_{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}_{id(self):x}{SUFFIX}"
        self._pending: list[str] = []

    def append(self, task: str, trace: dict) -> None:
        """Buffer one record; ``flush`` writes it."""
        self._pending.append(json.dumps({"task": task, "trace": pack_floats(trace)}, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        """Write the buffered records as one gzip member, sync it to disk and close the file."""
        if not self._pending:
            return
        with open(self.path, "ab") as raw:
            with gzip.GzipFile(fileobj=raw, mode="ab") as handle:
                handle.write("".join(self._pending).encode("utf-8"))
            raw.flush()
            os.fsync(raw.fileno())
        self._pending.clear()


def read_traces(path: str | os.PathLike) -> list[dict]:
    """The ``{"task", "trace"}`` records of a trace file (``.jsonl.gz`` or plain ``.jsonl``), in order.

    A ``.jsonl.gz`` file cut short by a crash while a batch (one gzip member) was being written
    yields the records of the complete batches only: the partial batch is dropped whole, even
    when some of its lines were complete. A plain ``.jsonl`` file has no batch boundaries: only a
    last line cut mid-write is dropped. Either way with a warning naming the file.
    """
    path = Path(path)
    data = path.read_bytes()
    plain = data[:2] != b"\x1f\x8b"
    texts, complete = ([data.decode("utf-8")], True) if plain else _gzip_members(data, path)
    lines = [line for text in texts for line in text.splitlines(keepends=True)]
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(unpack_floats(json.loads(line)))
        except json.JSONDecodeError as error:
            if not (plain and number == len(lines) and not line.endswith("\n")):
                raise ValueError(f"trace file {path}, line {number}: not JSON ({error})") from None
            complete = False  # a last plain line cut off mid-write
    if not complete:
        warnings.warn(f"trace file {path} ends in an incomplete batch (a run stopped while writing it); "
                      f"read the {len(records)} records of the complete batches before it", stacklevel=2)
    return records


def _gzip_members(data: bytes, path: Path) -> tuple[list[str], bool]:
    """The text of each complete gzip member (one batch each), and whether the last was complete."""
    texts = []
    while data:
        member = zlib.decompressobj(wbits=31)   # one gzip member, header and CRC checked
        try:
            text = member.decompress(data)
        except zlib.error as error:
            raise ValueError(f"trace file {path}: batch {len(texts) + 1} is corrupt ({error})") from None
        if not member.eof:
            return texts, False   # cut while this batch was written: drop it whole
        texts.append(text.decode("utf-8"))
        data = member.unused_data
    return texts, True


def pack_floats(value):
    """``value`` with every float list (1-D, or rectangular 2-D) replaced by its packed form."""
    if isinstance(value, dict):
        return {key: pack_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        array = _float_array(value)
        if array is None:
            return [pack_floats(item) for item in value]
        single = array.astype("<f4")
        exact = np.array_equal(single.astype("<f8").view(np.uint64), array.view(np.uint64))
        stored = single if exact else array
        planes = np.ascontiguousarray(stored.view(np.uint8).reshape(-1, stored.itemsize).T)
        return {PACKED_KEY: "f4" if exact else "f8", "shape": list(array.shape),
                "data": base64.b64encode(planes.tobytes()).decode("ascii")}
    return value


def unpack_floats(value):
    """The inverse of ``pack_floats``: packed arrays become lists of Python floats again."""
    if isinstance(value, dict):
        if PACKED_KEY in value:
            dtype = np.dtype("<" + value[PACKED_KEY])
            planes = np.frombuffer(base64.b64decode(value["data"]), dtype=np.uint8).reshape(dtype.itemsize, -1)
            array = np.ascontiguousarray(planes.T).view(dtype).reshape(value["shape"])
            return array.astype(np.float64).tolist()
        return {key: unpack_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unpack_floats(item) for item in value]
    return value


def _float_array(values: list):
    """A float64 array of a non-empty list of floats or of equal-length float rows, else None."""
    if not values:
        return None
    if all(type(item) is float for item in values):
        return np.asarray(values, dtype="<f8")
    if all(isinstance(row, list) and row and all(type(item) is float for item in row) for row in values):
        if len({len(row) for row in values}) == 1:
            return np.asarray(values, dtype="<f8")
    return None
