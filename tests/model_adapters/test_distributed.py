"""Multi-process runs (model_adapters/distributed.py): two gloo processes on the CPU."""
import json
import os
import socket
import sqlite3
import time

import pytest
from helpers import request

from kvinject.model_adapters.distributed import check_backend, check_gpu_count

QUESTIONS = [("What is 3 + 5?", "What is 4 + 5?"), ("What is 7 - 2?", "What is 9 - 2?"),
             ("What is 2 * 6?", "What is 3 * 6?"), ("What is 8 / 4?", "What is 8 / 2?")]


def _requests():
    return [request(f"doc{i}", q, a) for i, (q, a) in enumerate(QUESTIONS)]


def _lm(model_dir, store, trace_dir):
    from kvinject.model_adapters.harness_model import KVInjectLM

    return KVInjectLM(pretrained=str(model_dir), injection_points="1:2", batch_size=1, result_store=str(store),
                      trace_dir=str(trace_dir))


def _copy_rows(source, target, keys):
    with sqlite3.connect(source) as src, sqlite3.connect(target, timeout=60) as dst:
        rows = src.execute(f"SELECT * FROM traces WHERE key IN ({','.join('?' * len(keys))})", keys).fetchall()
        dst.executemany("INSERT OR REPLACE INTO traces VALUES (?, ?, ?)", rows)


def _worker(rank, port, model_dir, full_store, shared_store, late_key, folder):
    """One rank: rank 1's first read of the store comes after rank 0's and after another writer
    committed `late_key`, the race of two processes starting while the store is being written."""
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    from kvinject.model_adapters.result_store import ResultStore

    real_get_many = ResultStore.get_many
    flag = os.path.join(folder, "rank0_has_read")

    def get_many(store, keys):
        if rank == 1 and not os.path.exists(flag + ".done"):
            while not os.path.exists(flag):
                time.sleep(0.05)
            _copy_rows(full_store, shared_store, [late_key])
            open(flag + ".done", "w").close()
        found = real_get_many(store, keys)
        if rank == 0:
            open(flag, "a").close()
        return found

    ResultStore.get_many = get_many
    lm = _lm(model_dir, shared_store, os.path.join(folder, f"traces{rank}"))
    outputs = lm.generate_until(_requests())
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as handle:
        json.dump({"traces": [o.trace for o in outputs], "computed": lm.docs_computed}, handle)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_on_the_pending_docs_of_a_store_written_while_they_start(local_model_dir, tmp_path):
    import torch.multiprocessing as mp

    from kvinject.model_adapters.harness_model import problem_from_request
    from kvinject.model_adapters.run_fingerprint import doc_key

    full = tmp_path / "full.sqlite"
    single = _lm(local_model_dir, full, tmp_path / "single")
    reference = [o.trace for o in single.generate_until(_requests())]
    keys = [doc_key(single.fingerprint, problem_from_request(single.args, r.task_name, r.doc, *r.args, single.turn_frame))
            for r in _requests()]
    single.store.close()
    shared = tmp_path / "shared.sqlite"
    sqlite3.connect(shared).execute("CREATE TABLE traces (key TEXT PRIMARY KEY, trace TEXT NOT NULL, sha256 TEXT NOT NULL)")
    _copy_rows(full, shared, [keys[0]])  # the store already holds doc0; doc1 is committed while they start

    mp.spawn(_worker, args=(_free_port(), str(local_model_dir), str(full), str(shared), keys[1], str(tmp_path)),
             nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for result in results:
        assert result["traces"] == json.loads(json.dumps(reference))
    # doc0 was stored before the start; doc1 was read as stored by rank 1 only, so it is computed
    # again (by rank 0, its share of the agreed list [1, 2, 3]); every doc computed exactly once.
    assert sorted(r["computed"] for r in results) == [1, 2]


def test_more_processes_than_gpus_are_refused():
    with pytest.raises(ValueError, match="LOCAL_RANK=2 has no GPU of its own: this machine has 2 GPU"):
        check_gpu_count(local_rank=2, gpus=2)
    check_gpu_count(local_rank=1, gpus=2)


def test_nccl_with_a_cpu_device_is_refused():
    with pytest.raises(ValueError, match="device=cpu runs on the CPU, but the process group uses NCCL"):
        check_backend("nccl", gpus=False, device="cpu")
    check_backend("gloo", gpus=False, device="cpu")
    check_backend("nccl", gpus=True, device="cuda")


def test_an_uncaught_exception_in_a_process_of_a_group_ends_it_at_once(monkeypatch):
    from kvinject.model_adapters import distributed

    printed, exits = [], []
    monkeypatch.setattr(distributed.os, "_exit", exits.append)
    hook = distributed.exit_at_once(lambda *info: printed.append(info[1]))
    error = RuntimeError("kvinject failed on doc(s) a")
    hook(RuntimeError, error, None)
    assert printed == [error] and exits == [1]  # printed first, then no destructors that could block
