"""The baseline and the oracle prefill their common prompt prefix once, and nothing measured changes."""
import pytest
import torch

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.model_adapters.engine.row_cache import PaddedBatch
from kvinject.trace_schema import validate_trace

PROBLEMS = [
    Problem("story", "Q: Tom has 3 apples and 4 pears. How many?", "Q: Tom has 3 apples and 9 pears. How many?",
            "Now 9 pears.", 6),
    Problem("shorter", "Question: Ann has 12 coins and loses 5. How many?", "Question: Ann has 3 coins.", "3 coins", 6),
    Problem("same", "Hi. Q: 8*2=", "Hi. Q: 8*2=", "Again 8*2", 6),  # identical control
    Problem("first", "A: 1+1?", "B: 2+2, then 3?", "B instead", 6),  # differs at the first character
]


def shared_length(original, alternative):
    """The longest common prefix, leaving each prompt at least its last token to feed."""
    length = 0
    while length < min(len(original), len(alternative)) - 1 and original[length] == alternative[length]:
        length += 1
    return length


def run_with_and_without_sharing(monkeypatch, model, tokenizer, settings, batch_size):
    """(shared traces, unshared traces, fed prompt positions of each run); unshared rows prefill their whole prompt."""
    fed = [0]
    feed_tokens = PaddedBatch.feed_tokens

    def counting_feed(self, tokens):
        fed[0] += sum(len(row) for row in tokens)  # real tokens, not pads
        return feed_tokens(self, tokens)

    results = []
    for share in (True, False):
        with monkeypatch.context() as patch:
            patch.setattr(PaddedBatch, "feed_tokens", counting_feed)
            if not share:
                patch.setattr(InjectionEngine, "_shared_prefixes", lambda self, docs: [None] * len(docs))
            fed[0] = 0
            traces = InjectionEngine(model, tokenizer, settings, batch_size=batch_size).run(PROBLEMS)
            for trace in traces:
                validate_trace(trace)
            results.append((traces, fed[0]))
    (shared, shared_fed), (unshared, unshared_fed) = results
    return shared, unshared, shared_fed, unshared_fed


@pytest.mark.parametrize("family,strategy", [("qwen2", "append"), ("gpt2", "append"), ("mistral", "append"),
                                             ("gemma3_text", "replace"), ("llama", "replace")])
def test_sharing_the_prefix_changes_no_trace(family, strategy, monkeypatch, tiny_model_builder, tiny_tokenizer,
                                             assert_same_trace):
    model = tiny_model_builder(family)
    settings = InjectionSettings(injection_points=(0, 3), strategy=strategy)
    shared, unshared, shared_fed, unshared_fed = run_with_and_without_sharing(
        monkeypatch, model, tiny_tokenizer, settings, batch_size=len(PROBLEMS))
    assert len({len(t["prompts"]["original"]["ids"]) for t in shared}) == len(PROBLEMS)  # a ragged batch
    assert_same_trace(shared, unshared, abs_tol=1e-5)
    # The baseline and the oracle are greedy under full recomputation of their prompt.
    for trace in shared:
        for name, prompt in (("baseline", "original"), ("oracle", "alternative")):
            ids, new_ids = trace["prompts"][prompt]["ids"], trace["conditions"][name]["ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids + new_ids[:-1]])).logits[0, len(ids) - 1 :]
            assert logits.argmax(-1).tolist() == new_ids, (trace["doc_id"], name)
    lengths = [shared_length(t["prompts"]["original"]["ids"], t["prompts"]["alternative"]["ids"]) for t in shared]
    assert lengths[2] == len(shared[2]["prompts"]["original"]["ids"]) - 1  # identical control: all but the last
    assert lengths[3] == 1  # only BOS
    assert unshared_fed - shared_fed == sum(lengths)


def test_the_prefix_is_fed_once_per_doc(monkeypatch, tiny_model_builder, tiny_tokenizer_class, assert_same_trace):
    # Without BOS, "first" shares nothing: its batch (the last one) has no prefix to prefill.
    tokenizer = tiny_tokenizer_class(eos_token_id=None, bos_token_id=None)
    shared, unshared, shared_fed, unshared_fed = run_with_and_without_sharing(
        monkeypatch, tiny_model_builder("qwen2"), tokenizer, InjectionSettings(injection_points=(2,)), batch_size=1)
    assert_same_trace(shared, unshared, abs_tol=1e-5)
    prompts = [(t["prompts"]["original"]["ids"], t["prompts"]["alternative"]["ids"]) for t in shared]
    lengths = [shared_length(original, alternative) for original, alternative in prompts]
    assert lengths[0] == PROBLEMS[0].original_prompt.index("4") and lengths[3] == 0
    assert unshared_fed - shared_fed == sum(lengths)
