"""batch_size=auto from the docs' real needs on a simulated memory budget; out-of-memory errors."""
import dataclasses
import functools

import pytest
import transformers

from kvinject.model_adapters import harness_model
from kvinject.model_adapters.memory import (
    FREE_MEMORY_SHARE,
    DocShape,
    doc_kv_bytes,
    doc_shape,
    fitting_batch_size,
    hidden_layers,
    is_out_of_memory,
    kv_bytes_per_position,
)

GIB = 2**30
QWEN_7B = transformers.Qwen2Config(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                                   num_key_value_heads=4)


def test_a_7b_doc_with_shared_prompts_holds_them_once():
    bf16, fp32 = kv_bytes_per_position(QWEN_7B, 2), kv_bytes_per_position(QWEN_7B, 4)
    assert bf16 == 2 * 28 * 4 * 128 * 2 == 57344  # keys and values, 28 layers, 4 KV heads of 128
    zero_shot = DocShape(prompt=120, segment=60, budget=256, points=3)
    own, rows = 60 + 256 + 1, 2 + 3 * 6  # a row's own slots; baseline, oracle, run/old/new of 6 branches
    held = (2 + 6) * own * bf16 + 2 * 6 * own * fp32 + 2 * 2 * 120 * bf16 + 4 * own * bf16
    assert doc_kv_bytes(zero_shot, bf16, fp32, 28, True) == held + 2 * rows * (120 + own) * fp32 // 28
    # With every row and fork holding its own prompt copy (share_prompts=false): 2 + 6 held caches and
    # 18 rows of prompt + segment + budget each, 0.61 GiB here and 1.8 GiB with a 1,000-token prompt.
    for shape, shared_gib, copied_gib in ((zero_shot, 0.47, 0.61), (dataclasses.replace(zero_shot, prompt=1000), 0.72, 1.83)):
        copied = (2 + 6 + 3 * 6) * (shape.prompt + shape.segment + shape.budget) * bf16
        assert doc_kv_bytes(shape, bf16, bf16, 28, False) == copied
        assert copied / GIB == pytest.approx(copied_gib, abs=0.01)
        assert doc_kv_bytes(shape, bf16, bf16, 28, True) / GIB == pytest.approx(shared_gib, abs=0.01)
    replace = dataclasses.replace(zero_shot, segment=0, strategy="replace")  # and 3 control prompts, held once
    assert doc_kv_bytes(replace, bf16, bf16, 28, True) - doc_kv_bytes(
        dataclasses.replace(replace, strategy="append"), bf16, bf16, 28, True) == 2 * 3 * 120 * bf16


@pytest.mark.parametrize("share_prompts,short_docs,long_docs", [(False, 19, 6), (True, 28, 19)])
def test_the_batch_is_sized_from_the_largest_doc_on_a_simulated_budget(share_prompts, short_docs, long_docs):
    bf16, fp32 = kv_bytes_per_position(QWEN_7B, 2), kv_bytes_per_position(QWEN_7B, 4)
    short = DocShape(prompt=120, segment=60, budget=256, points=3)
    long = dataclasses.replace(short, prompt=1000)  # a few-shot prompt
    budget = 40 * GIB  # free memory of an 80 GB card with the weights loaded
    sized = functools.partial(fitting_batch_size, position_bytes=bf16, score_position_bytes=fp32, layers=28,
                              share_prompts=share_prompts)
    assert sized(budget, [short], maximum=64) == int(
        FREE_MEMORY_SHARE * budget // doc_kv_bytes(short, bf16, fp32, 28, share_prompts)) == short_docs
    assert sized(budget, [short, long], maximum=64) == int(
        FREE_MEMORY_SHARE * budget // doc_kv_bytes(long, bf16, fp32, 28, share_prompts)) == long_docs  # the long one
    assert sized(budget, [short], maximum=4) == 4
    assert sized(GIB // 4, [short], maximum=64) == 1  # not even one fits: run alone


def test_generate_until_sizes_batch_size_auto_from_its_docs(local_model_dir, tmp_path, monkeypatch, adaptation_request):
    lm = harness_model.KVInjectLM(pretrained=str(local_model_dir), injection_points="1:2", batch_size="auto",
                                  result_store="none", trace_dir=str(tmp_path))
    assert lm.batch_size == 8  # on the CPU: no memory to size from
    requests = [adaptation_request(f"doc{i}") for i in range(5)]
    problems = [harness_model.problem_from_request(lm.args, r.task_name, r.doc, *r.args, lm.turn_frame) for r in requests]
    position = kv_bytes_per_position(lm.model.config, 4)
    points = len(lm.settings.injection_points)
    layers = hidden_layers(lm.model.config)
    largest = max(doc_kv_bytes(doc_shape(lm.tokenizer, p, lm.settings.strategy, points), position, position, layers,
                               False)
                  for p in problems)
    monkeypatch.setattr(harness_model, "device_free_bytes", lambda device: int(2.5 * largest / FREE_MEMORY_SHARE))
    batches = []
    real_run = lm.engine.run
    monkeypatch.setattr(lm.engine, "run", lambda problems: batches.append(len(problems)) or real_run(problems))
    outputs = lm.generate_until(requests)
    assert batches == [2, 2, 1] and lm.batch_size == 2
    assert [o.trace["doc_id"] for o in outputs] == [f"doc{i}" for i in range(5)]


@pytest.mark.parametrize("error, expected", [
    ("OutOfMemoryError", True),
    (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("out of memory"), False),  # not an allocation failure PyTorch reports: a plain failure
    (ValueError("CUDA out of memory"), False),
])
def test_cuda_allocation_errors_count_as_out_of_memory(error, expected):
    import torch

    error = torch.OutOfMemoryError("simulated") if error == "OutOfMemoryError" else error
    assert is_out_of_memory(error) is expected
