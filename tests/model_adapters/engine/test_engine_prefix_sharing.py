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


def saved_by_sharing(traces):
    """Prompt positions the common prefix saves: its length, except where the two prompts are equal
    (then, with share_prompts, one prompt cache serves both, with or without the prefix)."""
    prompts = [(t["prompts"]["original"]["ids"], t["prompts"]["alternative"]["ids"]) for t in traces]
    return sum(shared_length(original, alternative) for original, alternative in prompts if original != alternative)


def run_with_and_without_sharing(monkeypatch, model, tokenizer, settings, batch_size, share_prompts=False):
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
            traces = InjectionEngine(model, tokenizer, settings, batch_size=batch_size,
                                     share_prompts=share_prompts).run(PROBLEMS)
            for trace in traces:
                validate_trace(trace)
            results.append((traces, fed[0]))
    (shared, shared_fed), (unshared, unshared_fed) = results
    return shared, unshared, shared_fed, unshared_fed


@pytest.mark.parametrize("share_prompts", [False, True], ids=["copied-prompts", "shared-prompts"])
@pytest.mark.parametrize("family,strategy", [("qwen2", "append"), ("gpt2", "append"), ("mistral", "append"),
                                             ("gemma3_text", "replace"), ("llama", "replace")])
def test_sharing_the_prefix_changes_no_trace(family, strategy, share_prompts, monkeypatch, tiny_model_builder,
                                             tiny_tokenizer, assert_same_trace):
    model = tiny_model_builder(family)
    settings = InjectionSettings(injection_points=(0, 3), strategy=strategy)
    shared, unshared, shared_fed, unshared_fed = run_with_and_without_sharing(
        monkeypatch, model, tiny_tokenizer, settings, batch_size=len(PROBLEMS), share_prompts=share_prompts)
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
    # With copied prompts, each row prefills its prompt after the common prefix; with shared ones
    # each prompt is prefilled once, and identical prompts once for both.
    assert unshared_fed - shared_fed == (saved_by_sharing(shared) if share_prompts else sum(lengths))


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


@pytest.mark.parametrize("family,strategy", [("qwen2", "append"), ("gpt2", "append"), ("gemma2", "append"),
                                             ("gemma3_text", "replace"), ("llama", "replace"), ("phi3", "replace")])
def test_shared_prompts_give_the_traces_of_copied_ones(family, strategy, tiny_model_builder, tiny_tokenizer,
                                                       assert_same_trace):
    """share_prompts changes where the prompts' keys and values are held, not what any row attends
    to: the same traces, batched (a ragged batch) or one doc at a time, float32."""
    model = tiny_model_builder(family)
    settings = InjectionSettings(injection_points=(0, 2, 5), strategy=strategy, noise="shuffle")
    copied = InjectionEngine(model, tiny_tokenizer, settings, batch_size=len(PROBLEMS)).run(PROBLEMS)
    for batch_size in (1, len(PROBLEMS)):
        shared = InjectionEngine(model, tiny_tokenizer, settings, batch_size=batch_size, share_prompts=True).run(PROBLEMS)
        assert_same_trace(shared, copied, abs_tol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_shared_prompts_keep_identical_contexts_identical_in_16_bit(dtype, tiny_model_builder, tiny_tokenizer):
    """The old and new rows of an identical control continue the same prompt cache and feed the same
    tokens, so their distributions are equal bit for bit in 16-bit too (KL exactly 0)."""
    model = tiny_model_builder("qwen2").to(dtype)
    settings = InjectionSettings(injection_points=(0, 3))
    trace = InjectionEngine(model, tiny_tokenizer, settings, share_prompts=True).run([PROBLEMS[2]])[0]
    for name in ("injection@0", "injection@3", "noise@3"):
        series = trace["conditions"][name]["series"]
        assert series["kl_old_new"] and all(value == 0 for value in series["kl_old_new"]), name
        assert series["logp_old"] == series["logp_new"], name
