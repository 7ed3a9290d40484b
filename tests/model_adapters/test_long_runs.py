"""Long runs: resume after SIGKILL, same seed -> same results, data parallel, --use_cache, OOM back-off.

Every run here is a real lm-eval evaluation of a tiny random Llama saved as a local folder; the
process tests start tests/evaluation_run.py (lm-eval's simple_evaluate) in a subprocess.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DRIVER = Path(__file__).resolve().parents[1] / "evaluation_run.py"
TASK = "adaptation_semantic"
LIMIT = 7  # odd: the two processes of the data-parallel test get unequal shares
GEN_KWARGS = "max_gen_toks=40"
TIMESTAMPS = ("date", "start_time", "end_time", "total_evaluation_time_seconds")
# One thread per process everywhere: torchrun gives each of its processes one, and float reductions
# split over another number of threads differ in the last bits, so exact comparisons need the same count.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def model_args(model_dir, trace_dir, **extra):
    return json.dumps({"pretrained": str(model_dir), "injection_points": "1:3", "trace_dir": str(trace_dir), **extra})


def driver_command(out, args, launcher=()):
    return [*launcher, str(DRIVER), str(out), TASK, str(LIMIT), args, GEN_KWARGS]


def evaluate(out, args, launcher=(sys.executable,)):
    result = subprocess.run(driver_command(out, args, launcher), capture_output=True, text=True, timeout=900, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(Path(out).read_text())


def without_timestamps(run: dict) -> dict:
    run = {key: value for key, value in run.items() if key not in TIMESTAMPS}
    run["config"] = {key: value for key, value in run["config"].items() if key != "trace_file"}
    return run


@pytest.fixture(scope="module")
def reference(local_model_dir, tmp_path_factory):
    """One uninterrupted single-process run without a result store."""
    folder = tmp_path_factory.mktemp("reference")
    return evaluate(folder / "run.json", model_args(local_model_dir, folder, result_store="none"))


@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_identical_results(reference, local_model_dir, tmp_path):
    trace_dir = Path(reference["config"]["trace_file"]).parent  # same model args as the reference
    again = evaluate(tmp_path / "run.json", model_args(local_model_dir, trace_dir, result_store="none"))
    assert again["config"]["docs_computed"] == LIMIT
    assert without_timestamps(again) == without_timestamps(reference)


@pytest.mark.slow
def test_a_run_killed_several_times_resumes_to_the_uninterrupted_results(reference, local_model_dir, tmp_path,
                                                                         stored_docs):
    store = tmp_path / "store.sqlite"
    args = model_args(local_model_dir, tmp_path, result_store=str(store))
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    partial_kills = []  # docs in the store after each kill that hit the run mid-way
    for attempt in range(3):
        before = stored_docs(store)
        if before == LIMIT:
            break
        log = (tmp_path / f"attempt{attempt}.log").open("w")
        process = subprocess.Popen(driver_command(tmp_path / "killed.json", args, (sys.executable,)), stdout=log,
                                   stderr=log, env=ENV)
        deadline = time.monotonic() + 300
        while stored_docs(store) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until this attempt has finished a doc, then kill at a random moment
        time.sleep(rng.uniform(0.0, 0.2))  # within the next few docs: the tiny model runs ~10 docs per second
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            assert process.wait() == -signal.SIGKILL
            if stored_docs(store) < LIMIT:
                partial_kills.append(stored_docs(store))
        log.close()
    assert partial_kills, f"no kill landed mid-run (random seed {seed}); see {tmp_path}/attempt*.log"
    assert partial_kills == sorted(partial_kills) and partial_kills[0] > 0, "each attempt resumed, none restarted"
    finished_before = stored_docs(store)

    resumed = evaluate(tmp_path / "resumed.json", args)
    assert resumed["config"]["docs_reused_from_store"] == finished_before, f"random seed {seed}"
    assert resumed["config"]["docs_computed"] == LIMIT - finished_before
    assert resumed["results"] == reference["results"]
    assert resumed["samples"] == reference["samples"]
    assert resumed["trace_lines"] == reference["trace_lines"]


@pytest.mark.slow
def test_two_processes_give_the_per_doc_results_of_one(reference, local_model_dir, tmp_path):
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    run = evaluate(tmp_path / "run.json", model_args(local_model_dir, tmp_path, result_store="none"), torchrun)
    assert run["config"]["world_size"] == 2
    assert run["config"]["docs_computed"] in (LIMIT // 2, LIMIT - LIMIT // 2)  # rank 0's share
    assert run["samples"] == reference["samples"]
    assert run["results"] == reference["results"]
    assert run["trace_lines"] == reference["trace_lines"]  # both processes' traces, in one process's order


def test_use_cache_never_serves_results_of_other_injection_points(local_model_dir, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from kvinject.adaptation_tasks import TASKS_DIR

    def run(points):
        return lm_eval.simple_evaluate(
            model="kvinject",
            model_args={"pretrained": str(local_model_dir), "injection_points": points, "trace_dir": str(tmp_path)},
            tasks=[TASK], task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
            limit=2, gen_kwargs="max_gen_toks=8", use_cache=str(tmp_path / "cache"), bootstrap_iters=0,
        )

    first = run("2:4")
    second = run("3:5")
    assert any("@3" in key for key in second["results"][TASK])
    assert not any("@2" in key or "@4" in key for key in second["results"][TASK])
    assert second["config"]["docs_reused_from_store"] == 0
    assert second["config"]["result_store"] == str(tmp_path / "cache.kvinject.sqlite")
    third = run("2:4")  # the first settings again: now served from the store, identically
    assert third["config"]["docs_reused_from_store"] == 2
    assert third["results"] == first["results"]


def test_batch_size_auto_backs_off_on_out_of_memory(local_model_dir, tmp_path, caplog, adaptation_request):
    import torch

    from kvinject.model_adapters.harness_model import KVInjectLM

    lm = KVInjectLM(pretrained=str(local_model_dir), injection_points="1:2", batch_size="auto",
                    max_batch_size=4, result_store="none", trace_dir=str(tmp_path))
    assert lm.batch_size == 4
    one_doc_rows = []
    forward = lm.model.forward

    def recording_forward(*args, **kwargs):
        one_doc_rows.append(next(v for v in (kwargs.get("input_ids"), kwargs.get("inputs_embeds")) if v is not None).shape[0])
        return forward(*args, **kwargs)

    lm.model.forward = recording_forward
    expected = lm.generate_until([adaptation_request("probe")])[0].trace
    widest = max(one_doc_rows)

    def forward_with_little_memory(*args, **kwargs):  # room for two docs' rows at a time
        rows = next(v for v in (kwargs.get("input_ids"), kwargs.get("inputs_embeds")) if v is not None).shape[0]
        if rows > 2 * widest:
            raise torch.OutOfMemoryError(f"simulated: {rows} rows")
        return forward(*args, **kwargs)

    lm.model.forward = forward_with_little_memory
    with caplog.at_level("WARNING"):
        outputs = lm.generate_until([adaptation_request(f"doc{i}") for i in range(5)] + [adaptation_request("probe")])
    assert lm.batch_size <= 2 and lm.engine.batch_size == lm.batch_size
    assert "out of memory with 4 docs per batch" in caplog.text
    assert [o.trace["doc_id"] for o in outputs] == [f"doc{i}" for i in range(5)] + ["probe"]
    assert outputs[-1].trace["conditions"]["baseline"]["ids"] == expected["conditions"]["baseline"]["ids"]


def test_out_of_memory_with_a_fixed_batch_size_names_the_docs_and_the_fix(local_model_dir, tmp_path,
                                                                         adaptation_request):
    import torch

    from kvinject.model_adapters.harness_model import KVInjectLM

    lm = KVInjectLM(pretrained=str(local_model_dir), injection_points="1:2", batch_size=2, result_store="none",
                    trace_dir=str(tmp_path))

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated")

    lm.model.forward = no_memory
    with pytest.raises(RuntimeError, match=r"out of memory on doc\(s\) a, b with batch_size=2; use batch_size=auto"):
        lm.generate_until([adaptation_request("a"), adaptation_request("b")])
