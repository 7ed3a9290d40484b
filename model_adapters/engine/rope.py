"""Re-rotating cached keys to new positions (strategy=replace).

Swapping the prompt region of the cache for a prompt of another length moves every generated token
by ``delta`` positions. With rotary embeddings R(p + delta) = R(delta) R(p), so a cached key (already
rotated to p) is moved by applying R(delta) to it; values carry no position. This holds for the
Hugging Face families below, which all rotate the first ``rotary_dim`` channels with ``rotate_half``
(non-interleaved pairs), and for RoPE types whose frequencies do not depend on the sequence length.
``yarn`` scales cos and sin by a constant that the cached key already contains, so R(delta) is
applied unscaled. Everything else is refused rather than approximated.
"""
from __future__ import annotations

import torch

from kvinject.model_adapters.engine.row_cache import RowCache

# Families checked against their modeling code: keys cached after apply_rotary_pos_emb with rotate_half.
REROTATABLE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"})
# Frequencies fixed at init; "dynamic" and "longrope" change them with the sequence length.
POSITION_ADDITIVE_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})


def _rotary_module(model):
    return getattr(model.base_model, "rotary_emb", None)


def check_rerotatable(model) -> None:
    """Raise ValueError unless ``rerotate_keys`` is exact for this model."""
    model_type = model.config.model_type
    if model_type not in REROTATABLE_MODEL_TYPES:
        raise ValueError(
            f"strategy=replace is not supported for {model_type}: moving generated tokens to new positions "
            f"needs rotary position embeddings re-rotated exactly, implemented for {sorted(REROTATABLE_MODEL_TYPES)}"
        )
    rotary = _rotary_module(model)
    rope_types = rotary.rope_type.values() if isinstance(rotary.rope_type, dict) else [rotary.rope_type]
    unsupported = sorted(set(rope_types) - POSITION_ADDITIVE_ROPE_TYPES)
    if unsupported:
        raise ValueError(
            f"strategy=replace is not supported for {model_type}: rope_type {unsupported[0]!r} changes its "
            "frequencies with the sequence length, so cached keys cannot be moved by a fixed rotation"
        )


def _inverse_frequencies(model, layer_index: int) -> torch.Tensor:
    rotary = _rotary_module(model)
    if hasattr(rotary, "layer_types"):  # one rotary embedding per attention type (Gemma 3)
        layer_type = model.config.get_text_config(decoder=True).layer_types[layer_index]
        return getattr(rotary, f"{layer_type}_inv_freq")
    return rotary.inv_freq


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def rerotate_keys(model, row: RowCache, delta: int) -> RowCache:
    """``row`` with every key moved by ``delta`` positions (negative moves them back)."""
    if delta == 0:
        return row
    layers = []
    for index, (keys, values) in enumerate(row.layers):
        angles = delta * _inverse_frequencies(model, index).to(device=keys.device, dtype=torch.float32)
        angles = torch.cat((angles, angles))
        rotary_dim = angles.shape[0]
        rotated, passed = keys[..., :rotary_dim].float(), keys[..., rotary_dim:]
        rotated = rotated * angles.cos() + _rotate_half(rotated) * angles.sin()
        layers.append((torch.cat((rotated.to(keys.dtype), passed), dim=-1), values))
    return RowCache(tuple(layers))
