"""Per-sequence KV caches and their assembly into left-padded batches.

A ``RowCache`` holds the keys and values of one sequence's real tokens (no padding), so a branch can
be forked from any row of any batch at any step, spliced (replace strategy) and regrouped with rows
of other origins. ``PaddedBatch`` turns rows into one ``DynamicCache`` plus the 2-D attention mask and
the per-row next positions that batched decoding needs: explicit per-row ``position_ids``, never
transformers' default ``arange + cache length``, which would count a left-padded row's pads as
positions and rotate its keys to other positions than the same sequence alone. Positions equal the
number of real tokens before a token, so pad slots (left padding, or holes between a row's cache and
its next feed) never shift them.

Sliding-window models (Mistral, Gemma 2/3, ...) need more: transformers' sliding caches evict by slot
and its sliding masks measure the window in slots, pads included, so a padded row would see another
window than the same sequence alone. For them every layer keeps its full cache and the model gets
prepared 4-D masks computed from the rows' real positions, one per attention type.
"""
from __future__ import annotations

import dataclasses

import torch
from transformers import DynamicCache

from kvinject.model_adapters.engine.attention import GROUPED_EAGER


@dataclasses.dataclass(frozen=True)
class RowCache:
    """Keys and values of one sequence's real tokens, per layer ``[kv_heads, length, head_dim]``.

    Rows are never modified in place: every operation returns new tensors, so a row captured from
    the baseline can feed any number of branches without changing the shared prefix.
    """

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[1]

    def head(self, length: int) -> "RowCache":
        """The first ``length`` tokens."""
        return RowCache(tuple((k[:, :length], v[:, :length]) for k, v in self.layers))

    def tail(self, start: int) -> "RowCache":
        """The tokens from index ``start`` on."""
        return RowCache(tuple((k[:, start:], v[:, start:]) for k, v in self.layers))

    def then(self, other: "RowCache") -> "RowCache":
        """This row followed by ``other`` (same model)."""
        return RowCache(
            tuple(
                (torch.cat([k, k2], dim=1), torch.cat([v, v2], dim=1))
                for (k, v), (k2, v2) in zip(self.layers, other.layers)
            )
        )


def attention_windows(config) -> dict[str, int | None]:
    """Window of every attention type of a sliding-window model (None: full attention), or {} for a
    model without a sliding window, which keeps transformers' own masks (built from the 2-D mask)."""
    text_config = config.get_text_config(decoder=True)
    window = getattr(text_config, "sliding_window", None)
    layer_types = set(getattr(text_config, "layer_types", None) or ["sliding_attention"])
    if window is None or "sliding_attention" not in layer_types:
        return {}
    unknown = layer_types - {"sliding_attention", "full_attention"}
    if unknown:
        raise ValueError(f"model_type {config.model_type}: attention types {sorted(unknown)} are not supported")
    return {layer_type: window if layer_type == "sliding_attention" else None for layer_type in layer_types}


class PaddedBatch:
    """Rows of (cache, next tokens) left-padded into one ``DynamicCache`` with a 2-D mask.

    Call ``feed_tokens`` with each row's next tokens (ragged lists are left-padded, leaving a masked
    hole between a row's cache and its tokens) and pass what it returns to the model.
    """

    def __init__(self, model, caches: list[RowCache | None]):
        self.windows = attention_windows(model.config)
        implementation = model.config._attn_implementation
        if self.windows and implementation not in ("eager", GROUPED_EAGER, "sdpa"):
            raise ValueError(
                f"sliding-window model_type {model.config.model_type} needs attn_implementation eager "
                f"or sdpa (its masks are built from each row's positions), not {implementation!r}"
            )
        self.dtype = model.dtype
        lengths = [0 if c is None else c.length for c in caches]
        width = max(lengths, default=0)
        self.mask = torch.zeros(len(caches), width, dtype=torch.long, device=model.device)
        for row, length in enumerate(lengths):
            self.mask[row, width - length :] = 1
        # No config: every layer is a plain DynamicLayer that keeps all its slots (a config would give
        # sliding layers a DynamicSlidingWindowLayer, which evicts by slot, pads included).
        self.cache = DynamicCache(ddp_cache_data=_padded_layers(caches, width))

    @property
    def size(self) -> int:
        return self.mask.shape[0]

    def feed_tokens(self, tokens: list[list[int]]) -> dict:
        """Model kwargs that append ``tokens[row]`` to every row (each non-empty list right-aligned)."""
        width = max(len(t) for t in tokens)
        device = self.mask.device
        # Pad slots are masked out of every attention, so any valid id does; 0 always exists.
        # Built as Python lists and converted once: a per-row tensor costs more than a step of a small model.
        ids = torch.tensor([[0] * (width - len(t)) + list(t) for t in tokens], dtype=torch.long, device=device)
        feed_mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tokens], dtype=torch.long,
                                 device=device)
        self.mask = torch.cat([self.mask, feed_mask], dim=1)
        # Real tokens continue each row's own count; pads get position 0 (masked, never attended).
        positions = self._slot_positions()[:, -width:] * feed_mask
        return {
            "input_ids": ids,
            "attention_mask": self._position_masks(width) if self.windows else self.mask,
            "position_ids": positions,
            "cache": self.cache,
            "use_cache": True,
        }

    def _slot_positions(self) -> torch.Tensor:
        """[rows, slots]: the position of every real slot (the number of real slots before it)."""
        return self.mask.cumsum(-1) - 1

    def _position_masks(self, width: int):
        """Additive [rows, 1, queries, slots] masks of the last ``width`` slots' queries, one per
        attention type (a dict keyed by type when the model mixes types): a query at position p sees a
        real slot at position q iff p - q >= 0 (and < window on sliding layers), as transformers' masks
        do for one unpadded sequence. Every query also sees its own slot: a real query's own slot is
        already visible, and a pad query, which would otherwise see no slot at all, attends to itself
        only. A fully masked row is what some SDPA kernels turn into NaN on GPUs, and a NaN in a pad
        slot's keys or values would reach real rows through the next layers' products (0 x NaN)."""
        positions = self._slot_positions()
        slots = positions.shape[1]
        distance = positions[:, -width:, None] - positions[:, None, :]
        visible = self.mask.bool()[:, None, :] & (distance >= 0)
        device = positions.device
        own = torch.arange(slots, device=device)[None, :] == torch.arange(slots - width, slots, device=device)[:, None]
        masks = {}
        for layer_type, window in self.windows.items():
            allowed = (visible if window is None else visible & (distance < window)) | own
            additive = torch.zeros(allowed.shape, dtype=self.dtype, device=allowed.device)
            masks[layer_type] = additive.masked_fill_(~allowed, torch.finfo(self.dtype).min)[:, None]
        return masks if len(masks) > 1 else next(iter(masks.values()))

    def row_cache(self, row: int) -> RowCache:
        """A copy of ``row``'s real tokens as they stand now."""
        real = self.mask[row].bool()
        return RowCache(tuple((layer.keys[row][:, real], layer.values[row][:, real]) for layer in self.cache.layers))

    def keep_rows(self, rows: list[int]) -> None:
        """Drop every other row (finished sequences stop costing compute)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]

    def add_rows(self, caches: list[RowCache | None]) -> None:
        """Append rows (after the existing ones) that start from ``caches``: every row stays
        right-aligned, the narrower side gets left padding (masked slots, so no row changes)."""
        lengths = [0 if c is None else c.length for c in caches]
        width = max(self.mask.shape[1], *lengths)
        grow = width - self.mask.shape[1]
        added = torch.zeros(len(caches), width, dtype=self.mask.dtype, device=self.mask.device)
        for row, length in enumerate(lengths):
            added[row, width - length :] = 1
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (grow, 0)), added])
        new_layers = _padded_layers(caches, width)
        if new_layers is None:  # nothing cached in the new rows: zeros of the running layers' shape
            new_layers = [tuple(t.new_zeros((len(caches), t.shape[1], width, t.shape[3])) for t in (layer.keys, layer.values))
                          for layer in self.cache.layers]
        for layer, (keys, values) in zip(self.cache.layers, new_layers):
            # Pads are zeros: masked out of every attention (as in _padded_layers).
            layer.keys = torch.cat([torch.nn.functional.pad(layer.keys, (0, 0, grow, 0)), keys])
            layer.values = torch.cat([torch.nn.functional.pad(layer.values, (0, 0, grow, 0)), values])


def _padded_layers(caches: list[RowCache | None], width: int):
    """Per layer (keys, values) of shape [rows, kv_heads, width, head_dim], zeros in the left padding,
    one layer at a time (None: no cached token). DynamicCache copies each layer it is given (its
    update concatenates onto an empty tensor), so a generator keeps one padded layer alive beside
    the cache instead of a second copy of the whole batch's cache."""
    template = next((c for c in caches if c is not None and c.length > 0), None)
    if template is None:
        return None
    return (_padded_layer(caches, width, index) for index in range(len(template.layers)))


def _padded_layer(caches: list[RowCache | None], width: int, index: int):
    k_ref, v_ref = next(c for c in caches if c is not None and c.length > 0).layers[index]
    keys = k_ref.new_zeros((len(caches), k_ref.shape[0], width, k_ref.shape[2]))
    values = v_ref.new_zeros((len(caches), v_ref.shape[0], width, v_ref.shape[2]))
    for row, cache in enumerate(caches):
        if cache is not None and cache.length > 0:
            keys[row, :, width - cache.length :] = cache.layers[index][0]
            values[row, :, width - cache.length :] = cache.layers[index][1]
    return keys, values
