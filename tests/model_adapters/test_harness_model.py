"""KVInjectLM on a tiny local model: request checks, traces kept when a later batch fails."""
import pickle

import pytest
from helpers import GEN_KWARGS

from kvinject.model_adapters.harness_model import DocError, KVInjectLM, TracedGeneration, TraceSpool, first_occurrences
from kvinject.model_adapters.trace_log import read_traces


@pytest.fixture(scope="module")
def lm(local_model_dir, tmp_path_factory):
    return KVInjectLM(
        pretrained=str(local_model_dir), injection_points="1:2", batch_size=1, result_store="none",
        trace_dir=str(tmp_path_factory.mktemp("traces")),
    )


def test_every_doc_gets_its_trace_and_pickles(lm, adaptation_request):
    outputs = lm.generate_until([adaptation_request("a"), adaptation_request("b", "What is 7 - 2?", "What is 9 - 2?")])
    assert [o.trace["doc_id"] for o in outputs] == ["a", "b"]
    assert all(isinstance(o, TracedGeneration) and str(o) == o.trace["conditions"]["baseline"]["text"] for o in outputs)
    assert "Question: What is 9 - 2?" in outputs[1].trace["prompts"]["alternative"]["text"]
    copy = pickle.loads(pickle.dumps(outputs[0]))
    assert copy == outputs[0] and copy.trace == outputs[0].trace


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(alternative=""), "doc bad: field 'alternative_question' must be a non-empty string"),
        (dict(gen_kwargs={**GEN_KWARGS, "do_sample": True}), "doc bad: kvinject decodes greedily"),
        (dict(gen_kwargs={**GEN_KWARGS, "num_beams": 4}), "doc bad: unsupported generation_kwargs ['num_beams']"),
    ],
)
def test_a_bad_doc_fails_before_any_compute_and_is_named(lm, monkeypatch, bad, message, adaptation_request):
    monkeypatch.setattr(lm.engine, "run", lambda problems: pytest.fail("nothing may run before every doc is checked"))
    with pytest.raises(DocError) as error:
        lm.generate_until([adaptation_request("good"), adaptation_request("bad", **bad)])
    assert "task adaptation_semantic" in str(error.value) and message in str(error.value)


def test_prompt_without_the_question_is_named(lm, adaptation_request):
    broken = adaptation_request("c")
    broken.doc["original_question"] = "a question the prompt does not contain"
    with pytest.raises(DocError, match="doc c: the prompt does not contain field 'original_question'"):
        lm.generate_until([broken])


def test_a_failing_batch_names_its_docs_and_keeps_earlier_traces(lm, monkeypatch, adaptation_request):
    real_run = lm.engine.run
    calls = []

    def run_then_fail(problems):
        calls.append(problems)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real_run(problems)

    monkeypatch.setattr(lm.engine, "run", run_then_fail)
    before = len(read_traces(lm.trace_log.path))
    with pytest.raises(RuntimeError, match=r"kvinject failed on doc\(s\) second of task adaptation_semantic") as error:
        lm.generate_until([adaptation_request("first"), adaptation_request("second")])
    assert str(lm.trace_log.path) in str(error.value)
    kept = read_traces(lm.trace_log.path)[before:]
    assert [record["trace"]["doc_id"] for record in kept] == ["first"]


def test_loglikelihood_is_refused_with_a_reason(lm):
    with pytest.raises(NotImplementedError, match="use --model hf"):
        lm.loglikelihood([])


# generate_until is a short pipeline of named steps; each is checked here on its own.
def test_generate_until_reads_as_its_steps():
    import inspect

    assert len(inspect.getsource(KVInjectLM.generate_until).strip().splitlines()) < 25


def test_first_occurrences_run_a_repeated_request_once(adaptation_request):
    a, b = adaptation_request("a"), adaptation_request("b")
    first, distinct = first_occurrences([a, b, a, a])
    assert distinct == [0, 1] and first == {id(a): 0, id(b): 1}
    twins = [adaptation_request("a"), adaptation_request("a")]
    assert first_occurrences(twins)[1] == [0, 1]  # equal docs, distinct requests


def test_the_spool_writes_traces_in_request_order_as_soon_as_the_earlier_ones_are_known(adaptation_request):
    class Log:
        def __init__(self):
            self.appended, self.flushes = [], 0

        def append(self, task, trace):
            self.appended.append((task, trace["doc_id"]))

        def flush(self):
            self.flushes += 1

    log = Log()
    spool = TraceSpool(log, [adaptation_request("a"), adaptation_request("b"), adaptation_request("c")], [0, 2])
    spool.write_ready({2: {"doc_id": "c"}})
    assert log.appended == []  # doc 0 is not known yet
    spool.write_ready({0: {"doc_id": "a"}, 2: {"doc_id": "c"}})
    assert log.appended == [("adaptation_semantic", "a"), ("adaptation_semantic", "c")] and log.flushes == 2


def test_stored_traces_are_reused_and_counted(lm, tmp_path, monkeypatch, adaptation_request):
    from kvinject.model_adapters.result_store import ResultStore

    assert lm._stored_traces({0: "k0"}) == {}  # result_store=none
    trace = lm.generate_until([adaptation_request("stored")])[0].trace
    store = ResultStore(tmp_path / "store.sqlite")
    store.put_many([("k1", trace)])
    monkeypatch.setattr(lm, "store", store)
    monkeypatch.setattr(lm, "docs_reused", 0)
    assert lm._stored_traces({0: "k0", 1: "k1"}) == {1: trace} and lm.docs_reused == 1


def test_a_tokenised_check_failure_names_the_task(lm, monkeypatch, adaptation_request):
    def refuse(problems):
        raise ValueError(f"doc {problems[0].doc_id}: the context is too long")

    monkeypatch.setattr(lm.engine, "check", refuse)
    requests = [adaptation_request("long")]
    with pytest.raises(DocError, match="task adaptation_semantic, doc long: the context is too long"):
        lm._check_tokenised(requests, lm._checked_problems(requests), [0])
    lm._check_tokenised(requests, lm._checked_problems(requests), [])  # nothing pending, nothing checked


def test_compute_docs_retries_a_shrunk_batch_and_spools_each_one(lm, monkeypatch, adaptation_request):
    requests = [adaptation_request("x"), adaptation_request("y"), adaptation_request("z")]
    problems = lm._checked_problems(requests)
    calls = []

    def compute(requests, problems, batch, finished):
        calls.append(list(batch))
        if len(calls) == 1:  # out of memory: batch_size=auto halves the batch and retries
            lm.batch_size = 1
            return None
        return [{"doc_id": problems[i].doc_id, "conditions": {}} for i in batch]

    spooled = []
    monkeypatch.setattr(lm, "_compute", compute)
    monkeypatch.setattr(lm, "batch_size", 2)
    monkeypatch.setattr("kvinject.model_adapters.harness_model.generated_tokens", lambda trace: 1)
    spool = type("Spool", (), {"write_ready": lambda self, traces: spooled.append(sorted(traces))})()
    traces = {}
    lm._compute_docs(requests, problems, [0, 1, 2], {}, traces, spool, disable_tqdm=True)
    assert calls == [[0, 1], [0], [1], [2]]
    assert spooled == [[0], [0, 1], [0, 1, 2]] and [traces[i]["doc_id"] for i in range(3)] == ["x", "y", "z"]


def test_gathered_traces_join_this_process_traces(lm, monkeypatch, adaptation_request):
    from types import SimpleNamespace

    others = {1: {"doc_id": "elsewhere"}}
    processes = SimpleNamespace(rank=1, world_size=2, all_gather_object=lambda mine: [mine, others])
    monkeypatch.setattr(lm, "processes", processes)
    traces = {0: {"doc_id": "here"}}
    lm._gather_traces([adaptation_request("here"), adaptation_request("elsewhere")], [0, 1], [0], traces)
    assert traces == {0: {"doc_id": "here"}, 1: {"doc_id": "elsewhere"}}


def test_out_of_memory_frees_the_failed_batch_before_retrying(lm, monkeypatch, adaptation_request):
    """The batch's tensors are referenced by the traceback while the except runs: memory is freed
    after leaving it, when nothing of the failed batch is alive any more."""
    import dataclasses
    import weakref

    from kvinject.model_adapters import harness_model

    class BatchMemory:  # stands for the failed batch's caches
        pass

    real_run, batches, alive_at_free = lm.engine.run, [], []

    def run(problems):
        memory = BatchMemory()
        batches.append(weakref.ref(memory))
        if len(batches) == 1:
            raise RuntimeError("CUDA error: out of memory")
        return real_run(problems)

    monkeypatch.setattr(lm.engine, "run", run)
    monkeypatch.setattr(lm, "args", dataclasses.replace(lm.args, batch_size="auto"))
    monkeypatch.setattr(harness_model, "free_memory", lambda: alive_at_free.append(batches[0]() is not None))
    lm.batch_size = lm.engine.batch_size = 2
    try:
        outputs = lm.generate_until([adaptation_request("oom-a"), adaptation_request("oom-b")])
    finally:
        lm.batch_size = lm.engine.batch_size = 1
    assert alive_at_free == [False]
    assert [o.trace["doc_id"] for o in outputs] == ["oom-a", "oom-b"] and len(batches) == 3  # 2 docs, then 1 + 1
