"""Sliding-window families stay exact far beyond the window, batched with ragged padding or not."""
import pytest
import torch

from kvinject.model_adapters.engine import InjectionSettings, InjectionEngine, Problem
from kvinject.trace_schema import validate_trace
from kvinject.model_adapters.engine.decoding import DecodeRow, greedy_decode
from kvinject.model_adapters.engine.divergence import kl_divergence
from kvinject.model_adapters.engine.row_cache import PaddedBatch
from kvinject.model_adapters.engine.scoring import ScoringContext
from kvinject.model_adapters.engine.tokens import StopRule

from test_engine_batching import PROBLEMS, assert_same_trace
from test_engine_exactness import old_context_against_decode

WINDOW = 8  # every test sequence is several windows long
TOLERANCE = 1e-4


FAMILIES = ["mistral", "gemma2", "gemma3_text"]
# Gemma 2 has no sdpa kernel in transformers (logit soft-capping): it runs eager only.
WITH_ATTENTION = [(f, a) for f in FAMILIES for a in ("sdpa", "eager") if (f, a) != ("gemma2", "sdpa")]


def windowed(tiny_model_builder, family):
    model = tiny_model_builder(family)
    model.config.sliding_window = WINDOW
    for module in model.modules():  # Gemma attention modules copy the window at init
        if getattr(module, "sliding_window", None) is not None:
            module.sliding_window = WINDOW
    return model


@pytest.fixture(params=FAMILIES)
def windowed_model(request, tiny_model_builder):
    return windowed(tiny_model_builder, request.param)


@pytest.fixture(params=WITH_ATTENTION, ids=lambda p: "-".join(p))
def windowed_model_with_attention(request, tiny_model_builder):
    family, attention = request.param
    model = windowed(tiny_model_builder, family)
    model.set_attn_implementation(attention)
    return model


def full_logits(model, ids):
    """One forward pass over one unpadded sequence: transformers' own sliding masks, exact."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def no_stop(tokenizer):
    return StopRule(tokenizer, frozenset(), ())


def test_decoding_and_appending_match_one_forward_pass_beyond_the_window(windowed_model_with_attention, tiny_tokenizer):
    model = windowed_model_with_attention
    prompts = [tiny_tokenizer.encode("Q: 2+2?"), tiny_tokenizer.encode("Question: Tom has 3 apples and 4 pears. A:")]
    point = 20
    baselines = greedy_decode(
        model, [DecodeRow(None, tuple(p), 26, no_stop(tiny_tokenizer), capture_after=frozenset({point})) for p in prompts], "t"
    )
    for prompt, result in zip(prompts, baselines):
        assert full_logits(model, prompt + result.new_ids)[len(prompt) - 1 : -1].argmax(-1).tolist() == result.new_ids

    feeds = [tiny_tokenizer.encode(" New: 9 pears and 7 plums", add_special_tokens=False), [50, 51, 52]]
    batch = PaddedBatch(model, [r.captures[point] for r in baselines], "t")
    with torch.no_grad():
        logits = model(**batch.feed_tokens(feeds)).logits
    for row, (prompt, result, feed) in enumerate(zip(prompts, baselines, feeds)):
        ids = prompt + result.new_ids[:point] + feed
        assert len(ids) > 3 * WINDOW
        reference = full_logits(model, ids)[-len(feed) :]
        assert (logits[row, -len(feed) :] - reference).abs().max().item() <= TOLERANCE
        # The window really shapes the reference: without it the logits differ.
        model.config.sliding_window = 4096
        assert (full_logits(model, ids)[-len(feed) :] - reference).abs().max().item() > 1e-3
        model.config.sliding_window = WINDOW


@pytest.mark.parametrize("strategy", ["append", "replace"])
def test_a_ragged_batch_gives_the_traces_of_one_doc_at_a_time(strategy, windowed_model, tiny_tokenizer_class):
    model = windowed_model
    tokenizer = tiny_tokenizer_class(eos_token_id=None)
    problems = [Problem(p.doc_id, p.original_prompt, p.alternative_prompt, p.injection_text, 24) for p in PROBLEMS]
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
        windowed_model_with_attention, tiny_tokenizer):
    model = windowed_model_with_attention
    prompt = tiny_tokenizer.encode("Question: Tom has 3 apples. A:")
    point, budget = 6, 24
    # One unpadded row with transformers' own sliding cache is exact; a second, shorter context in the
    # same batch pads the first one's rows differently.
    assert len(prompt) + budget > 5 * WINDOW
    decoded, scored = old_context_against_decode(
        model, tiny_tokenizer, prompt, point, budget, batch_with=((ScoringContext(None, tuple(prompt[:5])), 2),)
    )
    assert kl_divergence(decoded, scored).max().item() < 1e-6


def test_sliding_window_models_need_eager_or_sdpa(windowed_model):
    windowed_model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="needs attn_implementation eager or sdpa"):
        PaddedBatch(windowed_model, [None], "docs 'a'")
