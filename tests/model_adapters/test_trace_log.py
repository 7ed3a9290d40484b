"""Trace files: compressed on disk, read back bit for bit by the one reader, no handle left open."""
import gzip
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from kvinject import trace_schema
from kvinject.model_adapters.trace_log import TraceLog, read_traces
from kvinject.trace_export import copy_run_traces_beside_results


def random_trace(doc_id: str, tokens: int = 40, layers: int = 30, seed: int = 0) -> dict:
    """A schema-1 trace whose series are float32 values, as the engine computes them."""
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.random(shape, dtype=np.float32).astype(np.float64).tolist()  # noqa: E731
    settings = {"injection_points": [2], "strategy": "append", "noise": "random", "track_attention": True,
                "track_hidden": True, "seed": 1, "max_new_tokens": tokens + 2, "stop_sequences": ["\n\n"]}
    conditions = {
        "baseline": trace_schema.condition("original", list(range(tokens + 2)), "base", "max_new_tokens"),
        "oracle": trace_schema.condition("alternative", list(range(tokens + 2)), "orac", "max_new_tokens"),
    }
    for kind in ("injection", "noise"):
        series = {key: f32(tokens) for key in trace_schema.SCALAR_SERIES}
        series["attention"] = {segment: f32(tokens, layers) for segment in trace_schema.SEGMENTS}
        series["hidden_cos_new"], series["hidden_cos_old"] = f32(tokens, layers), f32(tokens, layers)
        run = trace_schema.condition("original", list(range(tokens + 2)), "run", "max_new_tokens")
        conditions[f"{kind}@2"] = trace_schema.injection_condition(
            run, 2, [7, 8], "inj", [0, 1], list(range(2, tokens + 2)), series,
            noise_kind="random" if kind == "noise" else None)
    prompts = {"original": {"text": "q", "ids": [1, 2]}, "alternative": {"text": "r", "ids": [1, 3]}}
    trace = trace_schema.build_trace(doc_id, settings, prompts, conditions)
    trace_schema.validate_trace(trace)
    return trace


def test_records_come_back_bit_for_bit_in_order(tmp_path):
    log = TraceLog(tmp_path)
    traces = [random_trace(f"d{i}", seed=i) for i in range(3)]
    traces[1]["conditions"]["injection@2"]["series"]["kl_run_new"][0] = 0.1  # not a float32: kept as float64
    log.append("task_a", traces[0])
    log.flush()
    log.append("task_b", traces[1])
    log.append("task_a", traces[2])
    log.flush()  # a second gzip member
    assert log.path.name.endswith(".jsonl.gz")
    records = read_traces(log.path)
    assert [(r["task"], r["trace"]["doc_id"]) for r in records] == [("task_a", "d0"), ("task_b", "d1"), ("task_a", "d2")]
    assert [r["trace"] for r in records] == traces  # == on floats: exact
    assert records[1]["trace"]["conditions"]["injection@2"]["series"]["kl_run_new"][0] == 0.1


def test_compressed_file_is_a_fraction_of_plain_json(tmp_path):
    log = TraceLog(tmp_path)
    traces = [random_trace(f"d{i}", seed=i) for i in range(2)]
    for trace in traces:
        log.append("t", trace)
    log.flush()
    plain = sum(len(json.dumps({"task": "t", "trace": t})) for t in traces)
    # random float32 values are the worst case (real series repeat their exponents more)
    assert log.path.stat().st_size < 0.3 * plain


def test_old_plain_jsonl_files_are_read(tmp_path):
    trace = random_trace("old", tokens=3, layers=2)
    path = tmp_path / "traces_old.jsonl"
    path.write_text(json.dumps({"task": "t", "trace": trace}) + "\n\n", encoding="utf-8")
    assert read_traces(path) == [{"task": "t", "trace": trace}]


def test_no_handle_stays_open_between_batches(tmp_path):
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc to list open files")
    log = TraceLog(tmp_path)
    log.append("t", random_trace("a", tokens=2, layers=2))
    log.flush()
    open_files = {os.path.realpath(fd_dir / fd) for fd in os.listdir(fd_dir)}
    assert str(log.path.resolve()) not in open_files


def test_a_file_cut_short_keeps_the_complete_batches_and_warns(tmp_path):
    log = TraceLog(tmp_path)
    log.append("t", random_trace("first", tokens=4, layers=2))
    log.flush()
    complete = log.path.stat().st_size
    log.append("t", random_trace("second", tokens=4, layers=2))
    log.flush()
    data = log.path.read_bytes()
    log.path.write_bytes(data[: complete + (len(data) - complete) // 2])  # crash while writing batch 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_traces(log.path)
    assert [r["trace"]["doc_id"] for r in records] == ["first"]
    assert any("incomplete batch" in str(w.message) for w in caught)


def test_a_corrupt_line_is_named(tmp_path):
    path = tmp_path / "traces.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"task": "t", "trace": {}}\nnot json\n'))
    with pytest.raises(ValueError, match="line 2: not JSON"):
        read_traces(path)


class FakeTracker:
    def __init__(self, output_path):
        self.output_path = str(output_path)
        self.date_id = "2026-01-01T00-00-00"

        class General:
            model_name_sanitized = "my__model"

        self.general_config_tracker = General()


def test_only_the_runs_own_trace_file_is_copied_beside_the_results(tmp_path):
    ours, other = TraceLog(tmp_path / "spool"), TraceLog(tmp_path / "spool")
    for log, doc in ((ours, "ours"), (other, "other")):
        log.append("t", random_trace(doc, tokens=2, layers=2))
        log.flush()
    written = []

    def save_results_aggregated(tracker, results, samples=None):
        folder = Path(tracker.output_path) / "my__model"
        folder.mkdir(parents=True)
        written.append(results)

    save = copy_run_traces_beside_results(save_results_aggregated)
    save(FakeTracker(tmp_path / "out"), {"config": {"trace_file": str(ours.path)}})
    copies = list((tmp_path / "out" / "my__model").glob("traces_*"))
    assert [c.name for c in copies] == ["traces_2026-01-01T00-00-00.jsonl.gz"]
    assert [r["trace"]["doc_id"] for r in read_traces(copies[0])] == ["ours"]
    assert written  # lm-eval's own save ran


def test_a_run_of_another_model_copies_nothing(tmp_path):
    save = copy_run_traces_beside_results(lambda tracker, results, samples=None: (Path(tracker.output_path) / "my__model").mkdir(parents=True))
    save(FakeTracker(tmp_path / "out"), {"config": {"model": "hf"}})
    assert not list((tmp_path / "out" / "my__model").iterdir())


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_a_multi_doc_batch_cut_short_is_dropped_whole(tmp_path, cut):
    """Batches of 2 and 3 docs; a crash part-way through the second batch (its first line may
    already be complete in the decompressed text) keeps exactly the first batch."""
    log = TraceLog(tmp_path)
    for doc in ("a1", "a2"):
        log.append("t", random_trace(doc, tokens=4, layers=2))
    log.flush()
    complete = log.path.stat().st_size
    for doc in ("b1", "b2", "b3"):
        log.append("t", random_trace(doc, tokens=4, layers=2, seed=1))
    log.flush()
    data = log.path.read_bytes()
    log.path.write_bytes(data[: complete + int((len(data) - complete) * cut)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_traces(log.path)
    assert [r["trace"]["doc_id"] for r in records] == ["a1", "a2"]
    assert any("incomplete batch" in str(w.message) for w in caught)


def test_complete_multi_doc_batches_read_without_warning(tmp_path):
    log = TraceLog(tmp_path)
    for batch in (("a1", "a2"), ("b1", "b2")):
        for doc in batch:
            log.append("t", random_trace(doc, tokens=4, layers=2))
        log.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = read_traces(log.path)
    assert [r["trace"]["doc_id"] for r in records] == ["a1", "a2", "b1", "b2"]
