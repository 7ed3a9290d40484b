"""Per-sequence KV caches and their assembly into left-padded batches.

A ``RowCache`` holds the keys and values of one sequence's real tokens (no padding), so a branch can
be forked from any row of any batch at any step, spliced (replace strategy) and regrouped with rows
of other origins. ``PaddedBatch`` turns rows into one ``DynamicCache`` plus the 2-D attention mask and
the per-row next positions that batched decoding needs (the left-padding pitfall in
/work/shared/notes/kv-cache-science.md section 2: explicit per-row ``position_ids``, never the default
``arange + cache length``). Positions equal the number of real tokens before a token, so pad slots
(left padding, or holes between a row's cache and its next feed) never shift them.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from transformers import DynamicCache


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


def sliding_window_limit(config) -> int | float:
    """Longest padded sequence a batch may reach while staying exact.

    ``DynamicSlidingWindowLayer`` keeps only the last ``window - 1`` slots and the sliding mask counts
    slots, pads included, so a left-padded row would see a different window than the same sequence
    alone. Below the limit nothing is ever evicted and both agree.
    """
    text_config = config.get_text_config(decoder=True)
    layer_types = getattr(text_config, "layer_types", None) or ()
    window = getattr(text_config, "sliding_window", None)
    uses_window = window is not None and (not layer_types or "sliding_attention" in layer_types)
    return window - 1 if uses_window else math.inf


class PaddedBatch:
    """Rows of (cache, next tokens) left-padded into one ``DynamicCache`` with a 2-D mask.

    Call ``feed_tokens`` with each row's next tokens (ragged lists are left-padded, leaving a masked
    hole between a row's cache and its tokens) and pass ``model_inputs`` to the model.
    """

    def __init__(self, model, caches: list[RowCache | None], what: str):
        self.config = model.config
        self.what = what  # names the rows in errors, e.g. "docs d1, d2"
        self.limit = sliding_window_limit(model.config)
        lengths = [0 if c is None else c.length for c in caches]
        width = max(lengths, default=0)
        self.next_positions = torch.tensor(lengths, dtype=torch.long, device=model.device)
        self.mask = torch.zeros(len(caches), width, dtype=torch.long, device=model.device)
        for row, length in enumerate(lengths):
            self.mask[row, width - length :] = 1
        self.cache = DynamicCache(ddp_cache_data=_padded_layers(caches, width), config=model.config)
        self._inputs = None

    @property
    def size(self) -> int:
        return self.mask.shape[0]

    def feed_tokens(self, tokens: list[list[int]]) -> dict:
        """Model kwargs that append ``tokens[row]`` to every row (each non-empty list right-aligned)."""
        width = max(len(t) for t in tokens)
        if self.mask.shape[1] + width > self.limit:
            raise ValueError(
                f"{self.what}: a padded sequence of {self.mask.shape[1] + width} positions exceeds the "
                f"sliding window of model_type {self.config.model_type} ({self.limit + 1}); use shorter "
                "prompts, fewer new tokens or batch_size=1"
            )
        device = self.mask.device
        # Pad slots are masked out of every attention, so any valid id does; 0 always exists.
        ids = torch.zeros((self.size, width), dtype=torch.long, device=device)
        feed_mask = torch.zeros(self.size, width, dtype=torch.long, device=device)
        for row, row_tokens in enumerate(tokens):
            if row_tokens:
                ids[row, width - len(row_tokens) :] = torch.tensor(row_tokens, device=device)
                feed_mask[row, width - len(row_tokens) :] = 1
        # Real tokens continue each row's own count; pads get position 0 (masked, never attended).
        positions = (self.next_positions[:, None] + feed_mask.cumsum(-1) - 1) * feed_mask
        self.next_positions = self.next_positions + feed_mask.sum(-1)
        self.mask = torch.cat([self.mask, feed_mask], dim=1)
        return {
            "input_ids": ids,
            "attention_mask": self.mask,
            "position_ids": positions,
            "cache": self.cache,
            "use_cache": True,
        }

    def row_cache(self, row: int) -> RowCache:
        """A copy of ``row``'s real tokens as they stand now."""
        real = self.mask[row].bool()
        return RowCache(tuple((layer.keys[row][:, real], layer.values[row][:, real]) for layer in self.cache.layers))

    def keep_rows(self, rows: list[int]) -> None:
        """Drop every other row (finished sequences stop costing compute)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.next_positions = self.next_positions[index]


def _padded_layers(caches: list[RowCache | None], width: int):
    """Per layer (keys, values) of shape [rows, kv_heads, width, head_dim], zeros in the left padding."""
    template = next((c for c in caches if c is not None and c.length > 0), None)
    if template is None:
        return None
    layers = []
    for index, (k_ref, v_ref) in enumerate(template.layers):
        keys = k_ref.new_zeros((len(caches), k_ref.shape[0], width, k_ref.shape[2]))
        values = v_ref.new_zeros((len(caches), v_ref.shape[0], width, v_ref.shape[2]))
        for row, cache in enumerate(caches):
            if cache is not None and cache.length > 0:
                keys[row, :, width - cache.length :] = cache.layers[index][0]
                values[row, :, width - cache.length :] = cache.layers[index][1]
        layers.append((keys, values))
    return layers
