"""strategy=replace on every rotary family: the generated tokens' keys are moved exactly.

The reference never re-rotates: it asks the model itself for the keys of the same tokens at the
shifted positions (a forward with explicit position ids) and continues from them.
"""
import pytest
import torch
from helpers import ROTARY_FAMILIES, TOLERANCE, prompt_cache
from transformers import DynamicCache

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.model_adapters.engine.rope import RotaryKeys
from kvinject.trace_schema import validate_trace

PROBLEMS = [
    Problem("short", "Q: 2+2?", "Q: 7+5, then 3?", "", 7),
    Problem("long", "Question: Tom has 3 apples and 4 pears. A:", "Question: Tom has 9 pears. A:", "", 7),
]


# What each family's modeling code does (pairing, rotated channels of its 8-channel heads; qwen3: 16),
# which RotaryKeys must find from the model alone.
HALF, INTERLEAVED = False, True
EXPECTED_ROTATION = {
    "qwen2": (HALF, 8), "llama": (HALF, 8), "mistral": (HALF, 8), "gemma2": (HALF, 8), "gemma3_text": (HALF, 8),
    "phi3": (HALF, 4), "qwen3": (HALF, 16), "gemma": (HALF, 8), "stablelm": (HALF, 2), "gpt_neox": (HALF, 4),
    "persimmon": (HALF, 4), "phi": (HALF, 4), "gptj": (INTERLEAVED, 4), "codegen": (INTERLEAVED, 4),
    "cohere": (INTERLEAVED, 8), "glm": (INTERLEAVED, 4), "olmo": (HALF, 8), "olmo2": (HALF, 8),
    "granite": (HALF, 8), "starcoder2": (HALF, 8),
}


def test_at_least_ten_rotary_families_with_both_pairings_and_partial_rotary_are_covered():
    assert set(EXPECTED_ROTATION) == set(ROTARY_FAMILIES) and len(ROTARY_FAMILIES) >= 10
    assert {pairing for pairing, _ in EXPECTED_ROTATION.values()} == {HALF, INTERLEAVED}
    assert {dim for _, dim in EXPECTED_ROTATION.values()} >= {2, 4, 8}  # partial and full rotary


@pytest.mark.parametrize("family", ROTARY_FAMILIES)
def test_moved_keys_equal_keys_computed_at_the_shifted_positions(family, tiny_tokenizer, prompt_cache,
                                                                 tiny_model_builder):
    model = tiny_model_builder(family)
    rotary = RotaryKeys.from_model(model)
    assert (rotary.interleaved, 2 * rotary.inv_freqs[0].shape[0]) == EXPECTED_ROTATION[family]
    ids = tiny_tokenizer.encode("Tom has 3 apples and 4 pears.")
    # Shifting every position leaves relative positions, hence hidden states, unchanged: only the
    # rotation of the keys differs, which moving them must reproduce.
    for start, target in ((0, 7), (9, 2), (3, 40)):
        moved = rotary.move(prompt_cache(model, ids, start), target - start)
        expected = prompt_cache(model, ids, target)
        for (keys, values), (keys_ref, values_ref) in zip(moved.layers, expected.layers):
            assert (keys - keys_ref).abs().max().item() <= TOLERANCE
            assert (values - values_ref).abs().max().item() <= TOLERANCE
    assert not torch.equal(prompt_cache(model, ids, 0).layers[0][0], prompt_cache(model, ids, 7).layers[0][0])


def run_replace(model, tokenizer, problems, points, track=False):
    settings = InjectionSettings(injection_points=points, strategy="replace", track_attention=track, track_hidden=track)
    traces = InjectionEngine(model, tokenizer, settings, batch_size=len(problems)).run(problems)
    for trace in traces:
        validate_trace(trace)
    return traces


@pytest.mark.parametrize("family", ROTARY_FAMILIES)
def test_replace_equals_the_continuation_from_keys_computed_at_shifted_positions(family, tiny_tokenizer,
                                                                                 tiny_model_builder):
    model = tiny_model_builder(family)
    for trace in run_replace(model, tiny_tokenizer, PROBLEMS, (0, 3)):
        conditions = trace["conditions"]
        assert conditions["injection@0"]["ids"] == conditions["oracle"]["ids"]  # at N=0 the oracle exactly
        assert conditions["injection@0"]["injected_ids"] == trace["prompts"]["alternative"]["ids"]
        replaced = conditions["injection@3"]
        assert replaced["pre_ids"] == conditions["baseline"]["ids"][:3]
        assert_run_matches_shifted_recomputation(model, trace, replaced)
        # The control swaps in a length-matched control prompt.
        assert len(conditions["noise@3"]["injected_ids"]) == len(trace["prompts"]["alternative"]["ids"])


@pytest.mark.parametrize("family", ["llama", "gptj", "phi"])
def test_replace_attends_to_the_new_prompt_only(family, tiny_tokenizer, tiny_model_builder):
    for trace in run_replace(tiny_model_builder(family), tiny_tokenizer, PROBLEMS, (3,), track=True):
        attention = trace["conditions"]["injection@3"]["series"]["attention"]
        assert max(max(row) for row in attention["original_prompt"]) == 0
        assert min(min(row) for row in attention["injected"]) > 0


@pytest.mark.parametrize("family", ["llama", "gptj", "phi"])
def test_replace_by_the_same_prompt_is_the_baseline(family, tiny_tokenizer, tiny_model_builder):
    same = [Problem(p.doc_id, p.original_prompt, p.original_prompt, "", 7) for p in PROBLEMS]
    for trace in run_replace(tiny_model_builder(family), tiny_tokenizer, same, (0, 2, 4)):
        for point in (0, 2, 4):
            assert trace["conditions"][f"injection@{point}"]["ids"] == trace["conditions"]["baseline"]["ids"]


def assert_run_matches_shifted_recomputation(model, trace, entry):
    """Reference for replace@N: the alternative prompt's K/V, then the generated tokens' K/V from one
    forward over original prompt + pre_ids at positions shifted by the length change (same content,
    the model's own keys at the new positions); the last generated token is fed again. Everything
    sits ``base`` positions later so that no position is negative (GPT-J looks positions up in a
    table); only relative positions reach the attention scores."""
    original, alternative = trace["prompts"]["original"]["ids"], trace["prompts"]["alternative"]["ids"]
    pre, post = entry["pre_ids"], entry["post_ids"]
    shift = len(alternative) - len(original)
    assert shift != 0 and post
    base = max(0, -shift)
    moved = prompt_cache(model, original + pre, base + shift).tail(len(original))
    context = prompt_cache(model, alternative, base).then(moved).head(len(alternative) + len(pre) - 1)
    cache = DynamicCache(ddp_cache_data=[(k[None], v[None]) for k, v in context.layers], config=model.config)
    feed = pre[-1:] + post[:-1]
    positions = torch.arange(len(feed))[None] + base + context.length
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([feed]), position_ids=positions, cache=cache, use_cache=True).logits[0]
    log_probs = torch.log_softmax(logits.float(), -1)
    assert log_probs.argmax(-1).tolist() == post
    expected = log_probs.gather(1, torch.tensor(post)[:, None])[:, 0]
    assert torch.tensor(entry["series"]["logp_run"]).sub(expected).abs().max().item() <= TOLERANCE


def refusal(model, tokenizer) -> str:
    with pytest.raises(ValueError) as error:
        InjectionEngine(model, tokenizer, InjectionSettings(strategy="replace"))
    return str(error.value)


def test_absolute_positions_are_refused(tiny_tokenizer, tiny_model_builder):
    message = refusal(tiny_model_builder("gpt2"), tiny_tokenizer)
    assert message.startswith("strategy=replace is not supported for gpt2: it has no rotary position embeddings")
    assert "use strategy=append" in message


def test_alibi_is_refused(tiny_tokenizer):
    import transformers as tf

    config = tf.FalconConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, alibi=True)
    message = refusal(tf.FalconForCausalLM(config).eval(), tiny_tokenizer)
    assert "not supported for falcon: it has ALiBi attention biases" in message


def test_length_dependent_rope_scaling_is_refused(tiny_tokenizer):
    import transformers as tf

    config = tf.LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                     "rope_theta": 10000.0})
    message = refusal(tf.LlamaForCausalLM(config).eval(), tiny_tokenizer)
    assert "rope_type 'dynamic' changes its frequencies with the sequence length" in message


def test_keys_that_do_not_rotate_are_refused(tiny_tokenizer):
    import transformers as tf

    # SmolLM3 skips RoPE on some layers (NoPE): their keys do not move with the position.
    config = tf.SmolLM3Config(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, no_rope_layers=[1, 0], pad_token_id=0)
    message = refusal(tf.SmolLM3ForCausalLM(config).eval(), tiny_tokenizer)
    assert "its cached keys do not move by a rotation" in message
