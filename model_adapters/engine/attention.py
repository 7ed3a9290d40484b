"""Eager attention (the only kind that returns attention weights), without repeating grouped KV heads.

transformers' eager attention expands every key/value head to the query heads that share it
(``repeat_kv``) before two batched matmuls. With one query per row (decoding) and one KV head
(Gemma-3-270M, Falcon, StarCoder) the expanded operand has a zero stride, and torch's CPU matmul
takes tens of times longer on it than on the same product with the query heads folded into the
matmul's rows (the attention row of ``tests/benchmarks``): those two lines were 60% of a
Gemma-3-270M study run's time on the CPU, and a doc took 2.4 times longer than with this function.
``grouped_eager_attention`` computes the same arithmetic (scores, soft-capping, additive mask,
float32 softmax, weights times values) with each KV head multiplied once by its group of query
heads. Nothing is materialised per query head, which also spares a GPU the repeated copy of the
cache that ``repeat_kv`` makes when several KV heads each serve several query heads.

It stands in for a family's own eager function only where it is known to be equal: on the first
call of each attention layer both run, and the layer uses the grouped form from that call on only if
the two agreed (see ``_AGREE``), so a family whose eager function does more (attention sinks, a
per-layer scale) keeps its own. Either way a layer gives one function's result on every call,
first included: a doc's trace must not depend on whether it was the first a process computed (a
resumed run starts at another doc than an uninterrupted one, and must reproduce its bits). Layers
without grouped heads, calls without a ``scaling`` and training mode (dropout) always go to the
family's own function.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import weakref

import torch
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_utils import AttentionInterface

logger = logging.getLogger(__name__)

GROUPED_EAGER = "kvinject_grouped_eager"
# Agreement of the grouped and family results on a layer's first call (atol, rtol) per dtype: float32
# differs by summation order only (~1e-7); half precisions round each product to 8 or 11 bits.
_AGREE = {torch.float32: (1e-5, 1e-4), torch.float16: (2e-2, 2e-2), torch.bfloat16: (5e-2, 5e-2)}
_verdicts: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def family_eager(module: torch.nn.Module):
    """The eager attention function of ``module``'s modeling file, or None."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def _grouped(query, key, value, attention_mask, scaling: float, softcap: float | None):
    rows, heads, queries, _ = query.shape
    groups, slots = key.shape[1], key.shape[2]
    folded = query.reshape(rows, groups, heads // groups * queries, query.shape[-1])
    scores = (torch.matmul(folded, key.transpose(2, 3)) * scaling).view(rows, heads, queries, slots)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, :slots]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    output = torch.matmul(weights.view(rows, groups, -1, slots), value)
    return output.view(rows, heads, queries, value.shape[-1]).transpose(1, 2).contiguous(), weights


def grouped_eager_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' attention-function interface: ([rows, queries, heads, dim] output, weights)."""
    own = family_eager(module)
    groupable = (
        query.shape[1] > key.shape[1]
        and kwargs.get("scaling") is not None
        and (attention_mask is None or attention_mask.shape[1] == 1)
        and not module.training
    )
    if not groupable or _verdicts.get(module) is False:
        return own(module, query, key, value, attention_mask, **kwargs)
    grouped = _grouped(query, key, value, attention_mask, kwargs["scaling"], kwargs.get("softcap"))
    if module not in _verdicts:
        reference = own(module, query, key, value, attention_mask, **kwargs)
        atol, rtol = _AGREE.get(query.dtype, _AGREE[torch.bfloat16])
        _verdicts[module] = all(torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(grouped, reference))
        if not _verdicts[module]:
            logger.warning("%s: grouped eager attention differs from the family's own; that layer keeps its own",
                           type(module).__name__)
            return reference
    return grouped


def _register() -> None:
    AttentionInterface.register(GROUPED_EAGER, grouped_eager_attention)
    AttentionMaskInterface.register(GROUPED_EAGER, eager_mask)  # the same masks as eager


def weights_implementation(model) -> str:
    """The attention implementation that returns weights for ``model``: the grouped eager one where the
    model groups its KV heads and its modeling file has an eager function to check it against."""
    text_config = model.config.get_text_config(decoder=True)
    heads = getattr(text_config, "num_attention_heads", None)
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    if heads and kv_heads < heads and family_eager(model) is not None:
        _register()
        return GROUPED_EAGER
    return "eager"


@contextlib.contextmanager
def attention_weights(model, needed: bool):
    """Within the block ``model`` runs an attention implementation that returns attention weights (when
    ``needed``), then the one it had."""
    previous = model.config._attn_implementation
    wanted = weights_implementation(model) if needed else previous
    if wanted == previous or (previous == GROUPED_EAGER and wanted == "eager"):
        yield
        return
    model.set_attn_implementation(wanted)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
