"""The decoding loop: branches join the running batch when their fork exists, so a batch costs one
pass of about ``budget`` sequential decoding steps, not one pass per stage."""
import pytest

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.model_adapters.engine.decoding import DecodeRow, DecodingLoop, greedy_decode

POINTS = (0, 5, 15)
BUDGET = 40


class CountingModel:
    """The model behind a counter of its forward calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, **kwargs):
        self.calls += 1
        return self.model(**kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def count_forwards(model, tokenizer, problems, batch_size, share_prompts=False, **settings):
    """(traces, forward calls per batch): the decoding steps (scoring included: it runs inside them)
    plus the prompt-prefix and control-prompt prefills."""
    counting = CountingModel(model)
    engine = InjectionEngine(counting, tokenizer, InjectionSettings(injection_points=POINTS, **settings),
                             batch_size=batch_size, share_prompts=share_prompts)
    counting.calls = 0  # replace's rotary probe at construction is not part of a batch
    traces = engine.run(problems)
    return traces, counting.calls / -(-len(problems) // batch_size)


def problems(count):
    return [Problem(f"doc-{i}", f"Q{i}: Ann has {i + 3} coins and loses {i}?", f"Q{i}: Ann has {i + 9} coins?",
                    f"Now {i + 9} coins.", BUDGET) for i in range(count)]


@pytest.mark.parametrize("family,strategy", [("qwen2", "append"), ("gemma3_text", "replace")])
def test_a_batch_decodes_in_one_pass_of_about_budget_steps(family, strategy, tiny_model_builder, tiny_tokenizer):
    """Every run goes to its budget (no EOS): a branch forked after N tokens generates BUDGET - N
    tokens from the step after its fork, so the last row ends at step BUDGET + 1 whatever the points."""
    model = tiny_model_builder(family)
    for batch_size, share in ((1, False), (3, False), (3, True)):
        traces, calls = count_forwards(model, tiny_tokenizer, problems(3), batch_size, share, strategy=strategy)
        assert all(c["stop_reason"] == "max_new_tokens" for t in traces for c in t["conditions"].values())
        assert all(t["conditions"][f"injection@{n}"]["injected"] for t in traces for n in POINTS)
        assert calls <= 1.05 * (BUDGET + max(POINTS))  # the bound (two loops needed ~2 x BUDGET)
        # One step per generated token plus the first step; the shared-prefix prefill, (share_prompts)
        # the prompts' prefill from it, (replace) the control prompts' prefill, and at most one prefill
        # of the joining rows' feeds per point: nothing else runs the model, scoring included.
        fixed = BUDGET + 2 + share + (strategy == "replace")
        assert fixed < calls <= fixed + len(POINTS)


def test_a_row_that_joins_a_running_loop_decodes_as_it_would_alone(tiny_model_builder, tiny_tokenizer, no_stop):
    model = tiny_model_builder("mistral")
    stop = no_stop(tiny_tokenizer)
    prompt = tuple(tiny_tokenizer.encode("Question: Tom has 3 apples. A:"))
    fork = greedy_decode(model, [DecodeRow(None, prompt, 4, stop, capture_after=frozenset({2}))])[0].captures[2]
    rows = [DecodeRow(fork, (40, 41, 42), 6, stop), DecodeRow(None, (1, 50, 51), 9, stop),
            DecodeRow(fork, (43,), 3, stop)]
    alone = [greedy_decode(model, [row])[0] for row in rows]

    loop = DecodingLoop(model)
    results = [loop.add(rows[0])]
    loop.step()
    loop.step()
    results.append(loop.add(rows[1]))  # a shorter cache (None) joins a wider running batch
    loop.step()
    results.append(loop.add(rows[2]))
    while loop.running:
        loop.step()
    assert loop.steps == 2 + 9  # the rows overlap: the last one to end joined at step 3 with budget 9
    assert loop.prefills == 1  # the second row's 3-token feed, not the third row's single token
    for got, expected in zip(results, alone):
        assert (got.new_ids, got.stop_reason) == (expected.new_ids, expected.stop_reason)


def test_docs_of_a_batch_share_the_loop(tiny_model_builder, tiny_tokenizer, assert_same_trace):
    model = tiny_model_builder("llama")
    together, calls_together = count_forwards(model, tiny_tokenizer, problems(3), 3)
    alone, calls_alone = count_forwards(model, tiny_tokenizer, problems(3), 1)
    assert calls_together == calls_alone  # per batch: three docs cost the steps of one
    assert_same_trace(together, alone)
