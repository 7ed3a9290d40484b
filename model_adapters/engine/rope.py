"""Moving rotary-embedded cached keys to new positions (strategy=replace).

Swapping the prompt region of the cache for a prompt of another length moves every generated token
by ``delta`` positions. With rotary embeddings R(p + delta) = R(delta) R(p), so a cached key (already
rotated to p) is moved by applying R(delta) to it; values carry no position.

R is read from the model's own rotary module, not from a list of families:
- frequencies: its ``inv_freq`` buffer (one per attention type, e.g. Gemma 3's
  ``sliding_attention_inv_freq``), or the sinusoid table ``embed_positions`` of GPT-J / CodeGen;
- rotary dimension: twice the number of frequencies; the first ``rotary_dim`` channels of each head
  rotate and the rest pass through (partial rotary: Phi, StableLM, GPT-NeoX, Persimmon, Phi-3, GLM);
- pairing: channel i with i + rotary_dim/2 (``rotate_half``) or 2i with 2i+1 (interleaved: GPT-J,
  CodeGen, Cohere, GLM). Which one a model uses is found by a probe: a few tokens are run at positions
  0.. and again at PROBE_SHIFT.. (only relative positions matter, so only the keys' rotation differs)
  and the pairing that maps the first keys onto the second on every layer is used. The probe also
  refuses any model whose keys do not move by such a rotation (NoPE layers, keys with the rotated
  part elsewhere, ALiBi models that still carry a rotary module).

Refused with a ValueError that says why: models without rotary embeddings (absolute positions such
as GPT-2, ALiBi): nothing in their cache can be moved by a rotation; RoPE types whose frequencies
depend on the sequence length ("dynamic", "longrope"). ``yarn`` scales cos and sin by a constant
that the cached key already contains, so R(delta) is applied unscaled.
"""
from __future__ import annotations

import dataclasses

import torch
from transformers import DynamicCache

from kvinject.model_adapters.engine.row_cache import RowCache

# Frequencies that change with the sequence length: a cached key cannot be moved by a fixed rotation.
LENGTH_DEPENDENT_ROPE_TYPES = frozenset({"dynamic", "longrope"})
PROBE_IDS = (3, 4, 5, 6)
PROBE_SHIFT = 5
# Largest |moved - recomputed| / max |recomputed| the probe accepts, by the model's precision; a
# wrong pairing is off by order 1.
PROBE_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}
LOW_PRECISION_PROBE_TOLERANCE = 5e-2


def _refuse(model, why: str):
    raise ValueError(f"strategy=replace is not supported for {model.config.model_type}: {why}")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


@dataclasses.dataclass(frozen=True)
class RotaryKeys:
    """The rotation of one model's cached keys: per cache layer its frequencies, and the pairing."""

    inv_freqs: tuple[torch.Tensor, ...]  # per layer, fp32 [rotary_dim / 2]
    interleaved: bool

    @classmethod
    def from_model(cls, model) -> "RotaryKeys":
        """The model's key rotation; ValueError (saying why) unless moving keys by it is exact."""
        inv_freqs = _layer_frequencies(model)
        start, shifted = (_probe_keys(model, offset) for offset in (0, PROBE_SHIFT))
        errors = {}
        for interleaved in (False, True):
            candidate = cls(inv_freqs, interleaved)
            errors[interleaved] = _relative_error(candidate.move(start, PROBE_SHIFT), shifted)
            if errors[interleaved] <= PROBE_TOLERANCE.get(model.dtype, LOW_PRECISION_PROBE_TOLERANCE):
                return candidate
        _refuse(model, f"its cached keys do not move by a rotation with the frequencies of its rotary module "
                       f"(relative error {min(errors.values()):.2g} after a shift of {PROBE_SHIFT} positions, "
                       "for both half-split and interleaved pairs), so they cannot be moved exactly")

    def move(self, row: RowCache, delta: int) -> RowCache:
        """``row`` with every key moved by ``delta`` positions (negative moves them back)."""
        if delta == 0:
            return row
        row = row.materialised()  # a shared prefix is moved in a copy, never in place
        rotate = _rotate_interleaved if self.interleaved else _rotate_half
        layers = []
        for inv_freq, (keys, values) in zip(self.inv_freqs, row.layers):
            angles = delta * inv_freq.to(device=keys.device)
            angles = angles.repeat_interleave(2) if self.interleaved else torch.cat((angles, angles))
            rotary_dim = angles.shape[0]
            rotated, passed = keys[..., :rotary_dim].float(), keys[..., rotary_dim:]
            rotated = rotated * angles.cos() + rotate(rotated) * angles.sin()
            layers.append((torch.cat((rotated.to(keys.dtype), passed), dim=-1), values))
        return RowCache(tuple(layers))


def _relative_error(moved: RowCache, expected: RowCache) -> float:
    """Largest |moved - expected| over any layer, relative to that layer's largest expected key."""
    return max(
        ((k - k_ref).abs().max() / k_ref.abs().max().clamp_min(1e-30)).item()
        for (k, _), (k_ref, _) in zip(moved.layers, expected.layers)
    )


@torch.inference_mode()
def _probe_keys(model, offset: int) -> RowCache:
    cache = DynamicCache()  # no config: sliding layers keep every slot, as in the engine
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.tensor([[i % vocab for i in PROBE_IDS]], device=model.device)
    positions = torch.arange(len(PROBE_IDS), device=model.device)[None] + offset
    model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True)
    return RowCache(tuple((layer.keys[0].float(), layer.values[0]) for layer in cache.layers))


def _layer_frequencies(model) -> tuple[torch.Tensor, ...]:
    """Per cache layer the rotary module's inverse frequencies (fp32), or a ValueError."""
    text_config = model.config.get_text_config(decoder=True)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    rotary = getattr(decoder, "rotary_emb", None) or getattr(model.base_model, "rotary_emb", None)
    if rotary is None or getattr(text_config, "alibi", False):
        kind = "ALiBi attention biases" if getattr(text_config, "alibi", False) else "no rotary position embeddings"
        _refuse(model, f"it has {kind}, so its cached keys carry no rotation that could move the generated "
                       "tokens to new positions; use strategy=append")
    rope_type = getattr(rotary, "rope_type", "default")
    rope_types = set(rope_type.values()) if isinstance(rope_type, dict) else {rope_type}
    length_dependent = sorted(rope_types & LENGTH_DEPENDENT_ROPE_TYPES)
    if length_dependent:
        _refuse(model, f"rope_type {length_dependent[0]!r} changes its frequencies with the sequence length, "
                       "so cached keys cannot be moved by a fixed rotation")
    layers = text_config.num_hidden_layers
    if hasattr(rotary, "embed_positions"):  # GPT-J / CodeGen: a table of sin(p f) then cos(p f)
        sin, cos = rotary.embed_positions[1].float().chunk(2)
        return (torch.atan2(sin, cos),) * layers
    if getattr(rotary, "layer_types", None) is not None:  # one frequency set per attention type (Gemma 3, OLMo 3)
        frequencies = [getattr(rotary, f"{kind}_inv_freq", None) for kind in text_config.layer_types]
    else:
        frequencies = [getattr(rotary, "inv_freq", None)] * layers
    if any(f is None for f in frequencies):
        _refuse(model, f"its rotary module {type(rotary).__name__} has no inverse frequencies (inv_freq) for "
                       "every layer, so the rotation of its cached keys is unknown")
    return tuple(f.float() for f in frequencies)
