"""Side-by-side benchmarks on a tiny random Qwen2 (fast: part of the unit run with timing disabled).

Each test adds rows to the ratio table printed at the end of the session (tests/benchmarks/conftest.py);
the targets of issue 11 are stated for SmolLM2 (test_ratios_smollm2.py), the tiny rows show overheads.
"""
import pytest
import torch
from comparisons import (
    analysis_vs_batched_reprompt,
    batch_scaling,
    doc_analysis_vs_generate,
    grouped_vs_family_eager,
    inject_vs_reprefill,
    math_problems,
    naive_vs_engine,
)

from kvinject.trace_schema import SCALAR_SERIES


@pytest.fixture
def tiny(tiny_model_builder, tiny_tokenizer):
    return tiny_model_builder("qwen2"), tiny_tokenizer


def test_inject_vs_reprefill_tiny(comparison, tiny):
    model, _ = tiny
    row = comparison(lambda repeats, smoke: inject_vs_reprefill(model, repeats, label=" [tiny]"))
    assert row.ratio > 0


@pytest.mark.parametrize("track", [True, False], ids=["tracking", "no-tracking"])
def test_doc_analysis_vs_generate_tiny(comparison, tiny, track):
    model, tokenizer = tiny

    def run(repeats, smoke):
        problem = math_problems(1, 16 if smoke else 64)[0]
        return doc_analysis_vs_generate(model, tokenizer, problem, track, repeats, label=" [tiny]")

    rows, outputs = comparison(run)
    # Same work on both sides: the engine's baseline is exactly what generate returns.
    assert outputs["analysis"]["conditions"]["baseline"]["ids"] == outputs["generate"]


def test_batched_reprompt_generate_tiny(comparison, tiny):
    model, tokenizer = tiny
    rows, outputs = comparison(lambda repeats, smoke: analysis_vs_batched_reprompt(
        model, tokenizer, math_problems(1, 24 if smoke else 64)[0], repeats, label=" [tiny]"))
    # Same work on both sides: every condition's generated ids are the engine's.
    assert outputs["reprompt"] == outputs["analysis"] == outputs["shared"] and len(outputs["analysis"]) == 8
    verdicts = {row.name.split(" ")[0]: row.verdict for row in rows}
    assert verdicts["forward_calls"] == "met"  # counted, not timed: the decoding steps of one loop
    # batch_size=auto's estimates bound the measured caches, and sharing the prompts holds less
    assert verdicts["peak_kv_cache"] == "met" and verdicts["peak_kv_cache_shared_prompts"] == "met"
    assert next(row.ratio for row in rows if row.name.startswith("shared_prompts_kv")) < 1


def test_naive_reference_matches_engine_tiny(comparison, tiny):
    model, tokenizer = tiny

    def run(repeats, smoke):
        return naive_vs_engine(model, tokenizer, math_problems(1, 20 if smoke else 32)[0], repeats, label=" [tiny]")

    _, outputs = comparison(run)
    naive, trace = outputs["naive"], outputs["engine"]
    assert set(naive) == set(trace["conditions"])
    for name, expected in naive.items():
        condition = trace["conditions"][name]
        assert condition["ids"] == expected["ids"], name
        if "series" in expected:
            engine_series, naive_series = condition["series"], expected["series"]
            pairs = [(engine_series[key], naive_series[key]) for key in SCALAR_SERIES + ("hidden_cos_new", "hidden_cos_old")]
            pairs += [(engine_series["attention"][s], values) for s, values in naive_series["attention"].items()]
            for got, want in pairs:
                torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=0, msg=name)


def test_batch_scaling_tiny(comparison, tiny):
    model, tokenizer = tiny
    rows, _ = comparison(lambda repeats, smoke: batch_scaling(
        model, tokenizer, math_problems(8, 16 if smoke else 48), repeats, label=" [tiny]", target=3))
    assert [row.name for row in rows][-1].startswith("peak_memory")


def test_grouped_vs_family_eager_attention(comparison):
    row, outputs = comparison(lambda repeats, smoke: grouped_vs_family_eager(
        repeats, rows=4 if smoke else 24, slots=64 if smoke else 600))
    for ours, theirs in zip(outputs["grouped"], outputs["family"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)  # the same arithmetic
    assert row.ratio > 0
