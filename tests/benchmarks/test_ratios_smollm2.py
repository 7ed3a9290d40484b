"""The issue-11 targets, measured on SmolLM2-135M (fp32, CPU): slow tests (they load the real model).

With timing disabled (the unit run) every comparison runs once at a smoke budget, which checks that
both contenders compute the same thing; `--benchmark-enable` runs the stated sizes, interleaved.
"""
import pytest
from comparisons import (
    analysis_vs_batched_reprompt,
    batch_scaling,
    doc_analysis_vs_generate,
    inject_vs_reprefill,
    math_problems,
    naive_vs_engine,
)

pytestmark = pytest.mark.slow


def test_inject_vs_reprefill_smollm2(comparison, smollm2):
    model, _ = smollm2
    row = comparison(lambda repeats, smoke: inject_vs_reprefill(model, repeats))
    assert row.ratio > 0


@pytest.mark.parametrize("track", [True, False], ids=["tracking", "no-tracking"])
@pytest.mark.parametrize("budget", [64, 256])
def test_doc_analysis_vs_generate_smollm2(comparison, smollm2, budget, track):
    model, tokenizer = smollm2

    def run(repeats, smoke):
        problem = math_problems(1, 6 if smoke else budget)[0]
        return doc_analysis_vs_generate(model, tokenizer, problem, track, repeats)

    _, outputs = comparison(run)
    assert outputs["analysis"]["conditions"]["baseline"]["ids"] == outputs["generate"]


@pytest.mark.parametrize("budget", [64, 256])
def test_batched_reprompt_generate_smollm2(comparison, smollm2, budget):
    model, tokenizer = smollm2
    rows, outputs = comparison(lambda repeats, smoke: analysis_vs_batched_reprompt(
        model, tokenizer, math_problems(1, 18 if smoke else budget)[0], repeats))
    assert outputs["reprompt"]["baseline"] == outputs["analysis"]["baseline"] == outputs["shared"]["baseline"]
    verdicts = {row.name.split(" ")[0]: row.verdict for row in rows}
    assert verdicts["forward_calls"] == "met" and verdicts["peak_kv_cache"] == "met"
    assert verdicts["peak_kv_cache_shared_prompts"] == "met"


def test_naive_reference_smollm2(comparison, smollm2):
    model, tokenizer = smollm2
    # Smoke: one injection point and 6 tokens, since the naive reference costs minutes per doc here.
    _, outputs = comparison(lambda repeats, smoke: naive_vs_engine(
        model, tokenizer, math_problems(1, 6 if smoke else 64)[0], repeats, points=(3,) if smoke else (5, 10, 15)))
    naive, trace = outputs["naive"], outputs["engine"]
    assert {name: c["ids"] for name, c in trace["conditions"].items()} == {name: c["ids"] for name, c in naive.items()}


def test_batch_scaling_smollm2(comparison, smollm2):
    model, tokenizer = smollm2
    comparison(lambda repeats, smoke: batch_scaling(
        model, tokenizer, math_problems(2 if smoke else 8, 6 if smoke else 32), repeats, target=1.5,
        sizes=(1, 2) if smoke else (1, 2, 4, 8)))
