"""The result store's key: everything that changes a trace, nothing that does not."""
import dataclasses
import os

import pytest

from kvinject.model_adapters.engine import Problem
from kvinject.model_adapters.harness_model import KVInjectLM
from kvinject.model_adapters.run_fingerprint import doc_key, folder_manifest

PROBLEM = Problem(doc_id="d1", original_prompt="Q: 2+3?\nA:", alternative_prompt="Q: 2+4?\nA:",
                  injection_text=" Wait: 2+4?", max_new_tokens=8, stop_sequences=("\n\n",))


def fingerprint(model_dir, tmp_path, **args):
    lm = KVInjectLM(pretrained=str(model_dir), trace_dir=str(tmp_path), result_store="none", **args)
    return lm.fingerprint


@pytest.fixture(scope="module")
def base(local_model_dir, tmp_path_factory):
    return fingerprint(local_model_dir, tmp_path_factory.mktemp("traces"), injection_points="1:3")


@pytest.mark.parametrize("changed", [
    {"injection_points": "1:4"}, {"strategy": "replace"}, {"noise": "shuffle"}, {"seed": 7},
    {"track_hidden": "false"}, {"dtype": "bfloat16"}, {"attn_implementation": "eager"},
    {"injection_template": "\nNew problem: {alternative}\n"}, {"dtype": "bfloat16", "score_dtype": "model"},
])
def test_a_setting_that_changes_traces_changes_the_key(changed, base, local_model_dir, tmp_path):
    assert fingerprint(local_model_dir, tmp_path, **{"injection_points": "1:3", **changed}) != base


@pytest.mark.parametrize("same", [{"batch_size": 4}, {"max_batch_size": 2}, {"score_dtype": "model"},
                                  {"share_prompts": "true"}])
def test_batch_size_and_output_folders_do_not_in_float32(same, base, local_model_dir, tmp_path):
    assert fingerprint(local_model_dir, tmp_path / "elsewhere", injection_points="1:3", **same) == base


def test_batch_size_changes_the_key_in_16_bit(local_model_dir, tmp_path):
    """In 16-bit a batch of another shape rounds differently and can change greedy ids at a near-tie."""
    keys = {size: fingerprint(local_model_dir, tmp_path, injection_points="1:3", dtype="bfloat16", batch_size=size)
            for size in (1, 3)}
    assert keys[1] != keys[3]
    assert fingerprint(local_model_dir, tmp_path / "elsewhere", injection_points="1:3", dtype="bfloat16",
                       batch_size=3) == keys[3]


def test_shared_prompts_reach_the_engine_and_change_the_key_in_16_bit(local_model_dir, tmp_path):
    """share_prompts lays the cache out differently: the same traces in float32 (tested in the engine's
    tests), other rounding in 16-bit."""
    lm = KVInjectLM(pretrained=str(local_model_dir), trace_dir=str(tmp_path), result_store="none",
                    injection_points="1:3", dtype="bfloat16", share_prompts="true")
    assert lm.engine.share_prompts is True
    assert lm.fingerprint != fingerprint(local_model_dir, tmp_path, injection_points="1:3", dtype="bfloat16")


@pytest.mark.parametrize("field, value", [
    ("doc_id", "d2"), ("original_prompt", "Q: 2+5?\nA:"), ("alternative_prompt", "Q: 1+4?\nA:"),
    ("injection_text", " Now: 2+4?"), ("max_new_tokens", 9), ("stop_sequences", ("\n",)),
])
def test_every_input_of_a_doc_changes_its_key(field, value):
    assert doc_key("run", dataclasses.replace(PROBLEM, **{field: value})) != doc_key("run", PROBLEM)
    assert doc_key("run", PROBLEM) == doc_key("run", dataclasses.replace(PROBLEM))
    assert doc_key("other run", PROBLEM) != doc_key("run", PROBLEM)


def test_edited_or_touched_model_files_change_the_manifest(tmp_path, monkeypatch):
    from kvinject.model_adapters import run_fingerprint

    (tmp_path / "config.json").write_text('{"layers": 2}')
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4096)
    monkeypatch.setattr(run_fingerprint, "_CONTENT_HASH_LIMIT", 1024)  # treat the 4 KiB file as weights
    before = folder_manifest(tmp_path)
    assert folder_manifest(tmp_path) == before
    (tmp_path / "config.json").write_text('{"layers": 3}')  # same size, other content
    edited = folder_manifest(tmp_path)
    assert edited != before
    stat = (tmp_path / "model.safetensors").stat()
    os.utime(tmp_path / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert folder_manifest(tmp_path) != edited
