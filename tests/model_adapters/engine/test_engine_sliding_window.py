"""Sliding-window families stay exact far beyond the window, batched with ragged padding or not.
(Forked append against one forward pass beyond the window: test_engine_exactness.py.)"""
import pytest
import torch
from helpers import windowed_model

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.model_adapters.engine.decoding import DecodeRow
from kvinject.model_adapters.engine.divergence import kl_divergence
from kvinject.model_adapters.engine.row_cache import PaddedBatch
from kvinject.trace_schema import validate_trace

WINDOW = 8  # every test sequence is several windows long
FAMILIES = ["mistral", "gemma2", "gemma3_text"]
# Gemma 2 has no sdpa kernel in transformers (logit soft-capping): it runs eager only.
WITH_ATTENTION = [(f, a) for f in FAMILIES for a in ("sdpa", "eager") if (f, a) != ("gemma2", "sdpa")]
PROBLEMS = [  # prompts of three lengths: a ragged batch
    Problem("a", "Q: 1+1?", "Q: 4+4, or 5?", "Now: 4+4, or 5", 24, ("}",)),
    Problem("b", "Question: Ann has 12 coins and loses 5. How many?", "Question: Ann has 3 coins.", "3 coins", 24),
    Problem("c", "Hi. Q: 8*2=", "Hi. Q: 8*3=", "8*3", 24, (";", "]")),
]


@pytest.fixture(params=FAMILIES)
def windowed(request):
    return windowed_model(request.param, WINDOW)


@pytest.fixture(params=WITH_ATTENTION, ids=lambda p: "-".join(p))
def windowed_with_attention(request):
    family, attention = request.param
    return windowed_model(family, WINDOW, attention)


def full_logits(model, ids):
    """One forward pass over one unpadded sequence: transformers' own sliding masks, exact."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def test_the_window_shapes_the_reference(windowed, tiny_tokenizer):
    ids = tiny_tokenizer.encode("Question: Tom has 3 apples and 4 pears. A: he has 7 fruits.")
    assert len(ids) > 3 * WINDOW
    reference = full_logits(windowed, ids)
    windowed.config.sliding_window = 4096
    assert (full_logits(windowed, ids) - reference).abs().max().item() > 1e-3


@pytest.mark.parametrize("strategy", ["append", "replace"])
def test_a_ragged_batch_gives_the_traces_of_one_doc_at_a_time(strategy, windowed, tiny_tokenizer_class,
                                                              assert_same_trace):
    model = windowed
    tokenizer = tiny_tokenizer_class(eos_token_id=None)
    problems = PROBLEMS
    settings = InjectionSettings(injection_points=(0, 3, 12), strategy=strategy, noise="shuffle")
    batched = InjectionEngine(model, tokenizer, settings, batch_size=3).run(problems)
    alone = [InjectionEngine(model, tokenizer, settings, batch_size=1).run([p])[0] for p in problems]
    assert len({len(t["prompts"]["original"]["ids"]) for t in batched}) == 3  # the batch really is ragged
    assert_same_trace(batched, alone)
    for trace in batched:
        validate_trace(trace)
        original = trace["prompts"]["original"]["ids"]
        baseline = trace["conditions"]["baseline"]["ids"]
        assert full_logits(model, original + baseline)[len(original) - 1 : -1].argmax(-1).tolist() == baseline
        if strategy == "append":  # the run is greedy under full recomputation of its context
            entry = trace["conditions"]["injection@12"]
            context = original + entry["pre_ids"] + entry["injected_ids"]
            post = entry["post_ids"]
            assert len(context) > 3 * WINDOW
            assert full_logits(model, context + post)[len(context) - 1 : -1].argmax(-1).tolist() == post


def test_old_context_along_baseline_tokens_equals_decode_distributions_beyond_the_window(
        windowed_with_attention, tiny_tokenizer, old_context_against_decode, no_stop):
    model = windowed_with_attention
    prompt = tiny_tokenizer.encode("Question: Tom has 3 apples. A:")
    point, budget = 6, 24
    # One unpadded row with transformers' own sliding cache is exact; a shorter row in the same loop
    # pads the scored row differently (and leaves it early).
    assert len(prompt) + budget > 5 * WINDOW
    decoded, scored = old_context_against_decode(
        model, tiny_tokenizer, prompt, point, budget, batch_with=(DecodeRow(None, tuple(prompt[:5]), 2, no_stop(tiny_tokenizer)),)
    )
    assert kl_divergence(decoded, scored).max().item() < 1e-6


def test_sliding_window_models_need_eager_or_sdpa(windowed):
    windowed.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="needs attn_implementation eager or sdpa"):
        PaddedBatch(windowed, [None])


def test_every_query_row_of_the_prepared_masks_sees_at_least_its_own_slot(windowed):
    """A pad query that sees no key would be a fully masked softmax row (NaN in some GPU kernels):
    it attends to itself only; real queries see exactly what they saw before (their own slot is real)."""
    model = windowed
    ids = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [20, 21]]  # the second row is mostly padding
    batch = PaddedBatch(model, [None, None])
    masks = batch.feed_tokens(ids)["attention_mask"]
    masks = masks if isinstance(masks, dict) else {"only": masks}
    real = batch.mask.bool()
    for mask in masks.values():
        allowed = mask[:, 0] == 0  # [rows, queries, slots]
        assert allowed.any(-1).all()
        pads = ~real[1]
        assert torch.equal(allowed[1][pads], torch.eye(real.shape[1], dtype=torch.bool)[pads])  # itself only
        for row in range(2):  # real queries never see a pad slot
            assert not allowed[row][real[row]][:, ~real[row]].any()
    with torch.no_grad():
        out = model(**PaddedBatch(model, [None, None]).feed_tokens(ids))
    assert torch.isfinite(out.logits).all()
