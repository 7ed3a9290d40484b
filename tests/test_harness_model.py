"""KVInjectLM on a tiny local model: request checks, traces kept when a later batch fails."""
import pickle

import pytest

from kvinject.model_adapters.harness_model import DocError, KVInjectLM, TracedGeneration
from kvinject.model_adapters.trace_log import read_traces
from helpers import GEN_KWARGS, request

@pytest.fixture(scope="module")
def lm(local_model_dir, tmp_path_factory):
    return KVInjectLM(
        pretrained=str(local_model_dir), injection_points="1:2", batch_size=1, result_store="none",
        trace_dir=str(tmp_path_factory.mktemp("traces")),
    )


def test_every_doc_gets_its_trace_and_pickles(lm):
    outputs = lm.generate_until([request("a"), request("b", "What is 7 - 2?", "What is 9 - 2?")])
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
def test_a_bad_doc_fails_before_any_compute_and_is_named(lm, monkeypatch, bad, message):
    monkeypatch.setattr(lm.engine, "run", lambda problems: pytest.fail("nothing may run before every doc is checked"))
    with pytest.raises(DocError) as error:
        lm.generate_until([request("good"), request("bad", **bad)])
    assert "task adaptation_semantic" in str(error.value) and message in str(error.value)


def test_prompt_without_the_question_is_named(lm):
    broken = request("c")
    broken.doc["original_question"] = "a question the prompt does not contain"
    with pytest.raises(DocError, match="doc c: the prompt does not contain field 'original_question'"):
        lm.generate_until([broken])


def test_a_failing_batch_names_its_docs_and_keeps_earlier_traces(lm, monkeypatch):
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
        lm.generate_until([request("first"), request("second")])
    assert str(lm.trace_log.path) in str(error.value)
    kept = read_traces(lm.trace_log.path)[before:]
    assert [record["trace"]["doc_id"] for record in kept] == ["first"]


def test_loglikelihood_is_refused_with_a_reason(lm):
    with pytest.raises(NotImplementedError, match="use --model hf"):
        lm.loglikelihood([])


def test_out_of_memory_frees_the_failed_batch_before_retrying(lm, monkeypatch):
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
        outputs = lm.generate_until([request("oom-a"), request("oom-b")])
    finally:
        lm.batch_size = lm.engine.batch_size = 1
    assert alive_at_free == [False]
    assert [o.trace["doc_id"] for o in outputs] == ["oom-a", "oom-b"] and len(batches) == 3  # 2 docs, then 1 + 1
