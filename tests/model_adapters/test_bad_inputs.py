"""Catalogue of bad inputs: each one fails with a message naming the argument, doc or field, before
any compute, or (for what only the model can reveal) without losing the docs finished before it.

Kill-and-resume of a real process is in test_long_runs.py; more model-arg cases in test_model_args.py.
"""
import importlib.util
import json
import logging
import sqlite3

import pytest
from helpers import request

from kvinject.adaptation_tasks.adaptation_math import data as math_data
from kvinject.adaptation_tasks.adaptation_math.mawps_sources import MawpsSourceError, read_mawps_source
from kvinject.adaptation_tasks.docs import MalformedDocError
from kvinject.model_adapters import loading
from kvinject.model_adapters.harness_model import DocError, KVInjectLM, no_eos_message
from kvinject.model_adapters.model_args import ModelArgsError, parse_model_args
from kvinject.model_adapters.result_store import ResultStore

# ------------------------------------------------------------------ model args: refused before loading


@pytest.mark.parametrize("raw, message", [
    ({"injection_point": "5"}, r"unknown model arg\(s\) injection_point for --model kvinject; valid: .*injection_points"),
    ({"injection_points": "5:-1"}, r"model arg injection_points='-1': must be >= 0"),
    ({"injection_points": "5:5"}, r"injection_points=\(5, 5\): points must be distinct"),
    ({"strategy": "insert"}, r"strategy='insert': expected one of append, replace"),
    ({"noise": "gaussian"}, r"noise='gaussian': expected one of"),
    ({"injection_template": "Now: {question}"}, r"injection_template=.*must be a string containing \{alternative\}"),
    ({"batch_size": 0}, r"model arg batch_size=0: must be >= 1"),
    ({"dtype": "float8"}, r"model arg dtype='float8': expected one of auto, float32"),
    ({"load_in_4bit": "true", "gguf_file": "m.gguf"}, r"load_in_4bit and gguf_file cannot be combined"),
])
def test_bad_model_arg_is_named(raw, message):
    with pytest.raises(ModelArgsError, match=message):
        parse_model_args(raw)


def test_injection_point_zero_is_valid_and_means_before_the_first_generated_token():
    assert parse_model_args({"injection_points": "0:5"}).injection.injection_points == (0, 5)


def test_load_in_4bit_without_cuda_is_refused():
    with pytest.raises(ModelArgsError, match=r"load_in_4bit=true needs a CUDA GPU \(device is cpu\)"):
        loading._quantization_config(parse_model_args({"load_in_4bit": "true"}), "cpu", None)


def test_missing_model_folder_is_named():
    with pytest.raises(FileNotFoundError, match=r"cannot load pretrained=/no/such/model: no such model folder\nWithout"):
        loading.load_model_and_tokenizer(parse_model_args({"pretrained": "/no/such/model"}))


@pytest.mark.parametrize("raw, arg", [({"pretrained": "smollm2-135m"}, "pretrained=smollm2-135m"),
                                      ({"pretrained": "some/repo", "gguf_file": "m.gguf"}, "gguf_file")])
def test_gguf_without_its_package_says_what_to_install(raw, arg, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    with pytest.raises(ModelArgsError, match=rf"model arg {arg} needs the gguf package: pip install 'kvinject\[gguf\]'"):
        loading.weights_location(parse_model_args(raw))


# ------------------------------------------------------------------ datasets: refused when the task loads


def test_malformed_dataset_json_names_the_file(tmp_path):
    broken = tmp_path / "MAWPS.json"
    broken.write_text('[{"sQuestion": "Tom has 2 pens.", ')
    with pytest.raises(MawpsSourceError, match=rf"Cannot read the MAWPS source '{broken}': Expecting"):
        read_mawps_source(str(broken))


MATH_DOC = {
    "id": "mawps-x1", "source_id": "x1", "variation_type": "single_number",
    "original_question": "Tom has 2 pens. How many?", "alternative_question": "Tom has 3 pens. How many?",
    "original_equation": "2", "alternative_equation": "3", "original_answer": "2", "alternative_answer": "3",
    "changed_numbers": [{"original": "2", "alternative": "3"}], "added_sentence": "",
}


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("original_answer"), r"doc 'mawps-x1': field 'original_answer' must be a non-empty string"),
    (lambda d: d.update(alternative_question=""), r"doc 'mawps-x1': field 'alternative_question' must be a non-empty"),
    (lambda d: d.update(alternative_answer="twelve"), r"doc 'mawps-x1': field 'alternative_answer' must be a number, got 'twelve'"),
])
def test_malformed_doc_names_doc_and_field(change, message, monkeypatch):
    doc = json.loads(json.dumps(MATH_DOC))
    change(doc)
    monkeypatch.setattr(math_data, "augmented_math_set", lambda source: [MATH_DOC, doc])
    with pytest.raises(MalformedDocError, match=message):
        math_data.load_math_dataset()


# ------------------------------------------------------------------ requests: refused before any compute


@pytest.fixture
def lm(local_model_dir, tmp_path):
    return KVInjectLM(pretrained=str(local_model_dir), injection_points="1:3", batch_size=1,
                      trace_dir=str(tmp_path), result_store=str(tmp_path / "store.sqlite"))


def with_gen_kwargs(doc_id, **gen_kwargs):
    return request(doc_id, gen_kwargs={"until": ["\n\n"], "max_gen_toks": 6, **gen_kwargs})


@pytest.mark.parametrize("bad, message", [
    (with_gen_kwargs("b", max_gen_toks=3), r"doc b: max_gen_toks=3 leaves no tokens after the largest injection point 3"),
    (with_gen_kwargs("b", max_gen_toks=2), r"doc b: max_gen_toks=2 leaves no tokens after the largest injection point 3"),
    (with_gen_kwargs("b", do_sample=True), r"doc b: kvinject decodes greedily; remove do_sample=true"),
    (with_gen_kwargs("b", num_beams=4), r"doc b: unsupported generation_kwargs \['num_beams'\]"),
    (request("b", alternative="  "), r"doc b: field 'alternative_question' must be a non-empty string"),
    (request("b", question="What is 3 + 5?" * 200), r"doc 'b': needs \d+ positions .* but the model's context is 1024"),
])
def test_bad_request_fails_before_any_compute_and_keeps_finished_docs(lm, bad, message, monkeypatch,
                                                                      adaptation_request):
    lm.generate_until([adaptation_request("a")])
    monkeypatch.setattr(lm.engine, "run", lambda problems: pytest.fail("computed before checking every request"))
    with pytest.raises(DocError, match=rf"task adaptation_semantic, {message}"):
        lm.generate_until([adaptation_request("a"), bad])
    assert len(lm.store) == 1  # doc a, finished before, is still there to be reused


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_logits_name_the_doc_and_keep_finished_docs(lm, value, monkeypatch, adaptation_request):
    lm.generate_until([adaptation_request("a")])
    forward = lm.model.forward

    def broken_forward(*args, **kwargs):
        output = forward(*args, **kwargs)
        output.logits = output.logits.clone().fill_(value)
        return output

    monkeypatch.setattr(lm.model, "forward", broken_forward)
    with pytest.raises(DocError, match=r"doc b: the model's outputs give an invalid trace \(trace field .*expected finite floats.*NaN or inf logits"):
        lm.generate_until([adaptation_request("a"), adaptation_request("b", "What is 7 - 2?", "What is 9 - 2?")])
    monkeypatch.setattr(lm.model, "forward", forward)
    before = lm.docs_reused
    lm.generate_until([adaptation_request("a"), adaptation_request("b", "What is 7 - 2?", "What is 9 - 2?")])
    assert lm.docs_reused - before == 1  # doc a was not lost


def test_tokenizer_without_eos_is_warned_about(local_model_dir, tmp_path, caplog, monkeypatch):
    from kvinject.model_adapters import harness_model

    monkeypatch.setattr(harness_model, "eos_ids", lambda tokenizer, model: frozenset())
    with caplog.at_level(logging.WARNING):
        KVInjectLM(pretrained=str(local_model_dir), injection_points="1", trace_dir=str(tmp_path), result_store="none")
    assert no_eos_message(str(local_model_dir)) in caplog.text
    assert "stop only at the task's stop sequences (until) or after max_gen_toks" in caplog.text


# ------------------------------------------------------------------ the result store


def test_interrupted_store_write_leaves_none_of_the_batch(lm, tmp_path, adaptation_request):
    store = ResultStore(tmp_path / "interrupted.sqlite")
    trace = lm.generate_until([adaptation_request("a")])[0].trace
    store.put_many([("first", trace)])
    with pytest.raises(sqlite3.Error):  # fails inside the transaction, after "second" was inserted
        store.put_many([("second", trace), (object(), trace)])
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        store.put_many([("third", {"bad": float("nan")})])
    assert len(store) == 1 and set(store.get_many(["first", "second", "third"])) == {"first"}


def test_corrupt_store_entry_is_recomputed_not_served(lm, caplog, adaptation_request):
    expected = lm.generate_until([adaptation_request("a")])[0].trace
    with sqlite3.connect(lm.store.path) as connection:
        connection.execute("UPDATE traces SET trace = replace(trace, '\"doc_id\": \"a\"', '\"doc_id\": \"z\"')")
    before = lm.docs_computed
    with caplog.at_level(logging.WARNING):
        again = lm.generate_until([adaptation_request("a")])[0].trace
    assert "is corrupt (checksum mismatch); recomputing it" in caplog.text
    assert lm.docs_computed - before == 1 and again == expected


def test_store_file_that_is_not_a_database_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"this is not an SQLite file" * 100)
    with caplog.at_level(logging.WARNING):
        store = ResultStore(path)
    assert len(store) == 0
    assert list(tmp_path.glob("results.sqlite.corrupt-*")), "the damaged file is kept for inspection"
    assert "is unreadable" in caplog.text
