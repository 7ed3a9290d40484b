"""Injection throughput of the engine (generated tokens per second, all conditions) on a tiny model.

Timed with ``--benchmark-enable`` (setup.cfg disables timing, so the unit run executes it once)."""
import pytest

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem

PROBLEMS = [
    Problem(f"doc-{i}", f"Question {i}: Ann has {i + 3} coins and loses 2. How many?",
            f"Question {i}: Ann has {i + 5} coins and loses 2. How many?", f"Now {i + 5} coins.", 48)
    for i in range(8)
]


@pytest.mark.benchmark(group="engine")
def test_injection_throughput(benchmark, tiny_model_builder, tiny_tokenizer):
    engine = InjectionEngine(tiny_model_builder("qwen2"), tiny_tokenizer, InjectionSettings(), batch_size=8)
    traces = benchmark.pedantic(engine.run, args=(PROBLEMS,), rounds=3, iterations=1, warmup_rounds=1)
    generated = sum(len(c["ids"]) - len(c.get("pre_ids", [])) for t in traces for c in t["conditions"].values())
    # Baseline and oracle generate 48 tokens per doc; each branch 48 - N (no EOS, so all hit the budget).
    assert generated == 8 * (2 * 48 + 2 * sum(48 - n for n in (5, 10, 15)))
    benchmark.extra_info["generated_tokens"] = generated
    if benchmark.stats is not None:  # None when timing is disabled
        benchmark.extra_info["tokens_per_s"] = generated / benchmark.stats.stats.mean
