"""Grouped eager attention (model_adapters/engine/attention.py): the family's eager arithmetic without
repeated KV heads, and the family's own function wherever the two differ."""
import sys
import types

import pytest
import torch

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem, attention
from kvinject.model_adapters.engine.attention import GROUPED_EAGER, attention_weights, grouped_eager_attention

PRECISIONS = (torch.float32, torch.bfloat16, torch.float16)


def _forward(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, output_attentions=True)


@pytest.mark.parametrize("dtype", PRECISIONS, ids=str)
def test_grouped_attention_gives_the_family_eager_logits_and_weights(tiny_family_model, dtype, logit_tolerance):
    family, model = tiny_family_model
    model = model.to(dtype).eval()
    ids = torch.randint(3, 60, (3, 24), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0  # a left-padded row
    model.set_attn_implementation("eager")
    reference = _forward(model, ids, mask)
    grouped_heads = model.config.num_attention_heads > getattr(model.config, "num_key_value_heads", 10**9)
    with attention_weights(model, True):
        assert model.config._attn_implementation == (GROUPED_EAGER if grouped_heads else "eager")
        _forward(model, ids, mask)  # each layer's first call is checked against the family's function
        grouped = _forward(model, ids, mask)
    layers = [m for m in model.modules() if m in attention._verdicts]
    assert all(attention._verdicts[m] for m in layers)
    assert len(layers) == (model.config.num_hidden_layers if grouped_heads else 0), family
    scale = reference.logits.float().abs().max().item()
    assert grouped.logits.float().sub(reference.logits.float()).abs().max() <= logit_tolerance(dtype, scale)
    for ours, theirs in zip(grouped.attentions, reference.attentions, strict=True):
        assert ours.float().sub(theirs.float()).abs().max() <= logit_tolerance(dtype, 1.0)


@pytest.mark.parametrize("dtype", PRECISIONS, ids=str)
def test_a_layer_gives_the_same_bits_on_its_first_call_and_later_ones(tiny_model_builder, dtype):
    """A doc's trace may not depend on whether it was the first a process computed: a resumed run
    starts at another doc than an uninterrupted one and must reproduce its results bit for bit.
    The grouped and family products differ in the last bits for some shapes (decoding ones here)."""
    model = tiny_model_builder("llama").to(dtype).eval()
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    dim = model.config.hidden_size // heads
    generator = torch.Generator().manual_seed(0)
    for queries, keys in ((1, 40), (1, 200), (5, 8), (5, 40)):
        layer = type(model.model.layers[0].self_attn)(model.config, 0).to(dtype).eval()  # no verdict yet
        query = torch.randn(3, heads, queries, dim, generator=generator).to(dtype)
        key, value = (torch.randn(3, kv_heads, keys, dim, generator=generator).to(dtype) for _ in range(2))
        mask = torch.zeros(3, 1, queries, keys, dtype=dtype)
        first, later = (grouped_eager_attention(layer, query, key, value, mask, scaling=dim**-0.5) for _ in range(2))
        assert attention._verdicts[layer] is True
        assert all(torch.equal(a, b) for a, b in zip(first, later)), (queries, keys)


@pytest.fixture
def layer_with_sinks(monkeypatch):
    """An attention layer whose modeling file's eager function adds an attention sink: one more logit
    per row in the softmax, which the grouped form does not compute."""
    modeling = types.ModuleType("modeling_with_sinks")

    def eager_attention_forward(module, query, key, value, attention_mask, scaling, **kwargs):
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        sink = torch.zeros(*scores.shape[:-1], 1)
        weights = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    modeling.eager_attention_forward = eager_attention_forward
    monkeypatch.setitem(sys.modules, modeling.__name__, modeling)
    layer_class = type("SinkAttention", (torch.nn.Module,), {"__module__": modeling.__name__})
    return layer_class().eval(), eager_attention_forward


def test_a_layer_whose_eager_function_differs_keeps_its_own(layer_with_sinks):
    layer, own = layer_with_sinks
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, heads, 5, 8, generator=generator) for heads in (4, 2, 2))
    for _ in range(2):  # the first call decides, the second follows the decision
        output, weights = grouped_eager_attention(layer, query, key, value, None, scaling=0.35)
        expected_output, expected_weights = own(layer, query, key, value, None, scaling=0.35)
        assert torch.equal(output, expected_output) and torch.equal(weights, expected_weights)
    assert attention._verdicts[layer] is False


def test_attention_weights_puts_the_previous_implementation_back(tiny_model_builder):
    model = tiny_model_builder("llama")
    model.set_attn_implementation("sdpa")
    with attention_weights(model, True):
        assert model.config._attn_implementation == GROUPED_EAGER
    assert model.config._attn_implementation == "sdpa"
    with attention_weights(model, False):
        assert model.config._attn_implementation == "sdpa"


@pytest.mark.slow
def test_smollm2_traces_are_the_same_with_the_family_eager_attention(smollm2, monkeypatch, assert_same_trace):
    model, tokenizer = smollm2
    problems = [Problem("capital", "Q: What is the capital of France?\nA:", "Q: What is the capital of Italy?\nA:",
                        " Correction: the question is about Italy.", 16, ("\n\n",))]
    settings = InjectionSettings(injection_points=(0, 5))
    attention._verdicts.clear()
    grouped = InjectionEngine(model, tokenizer, settings, batch_size=2).run(problems)
    assert list(attention._verdicts.values()) == [True] * model.config.num_hidden_layers
    monkeypatch.setattr(attention, "weights_implementation", lambda model: "eager")
    own = InjectionEngine(model, tokenizer, settings, batch_size=2).run(problems)
    for left, right in zip(grouped, own, strict=True):
        assert_same_trace(left, right)
