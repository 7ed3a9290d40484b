"""Per-sequence KV caches and their assembly into left-padded batches.

A ``RowCache`` holds the keys and values of one sequence's real tokens (no padding), so a branch can
be forked from any row of any batch at any step, spliced (replace strategy) and regrouped with rows
of other origins. A row may continue a *prefix*: another RowCache held once (a doc's prompt) that
the row refers to instead of copying it. With the engine's ``share_prompts`` every row of a doc
continues one of its two prompts (the baseline, the injection runs and their old-context rows the
original; the oracle and the new-context rows the alternative), so a doc's ~20 rows hold those
prompts once instead of ~20 times.

``PaddedBatch`` turns rows into one ``DynamicCache`` plus the 2-D attention mask and the per-row next
positions that batched decoding needs: explicit per-row ``position_ids``, never transformers' default
``arange + cache length``, which would count a left-padded row's pads as positions and rotate its
keys to other positions than the same sequence alone. Positions equal the number of real tokens
before a token, so pad slots (left padding, or holes between a row's prefix, its own cache and its
next feed) never shift them. A batch's slots are a prefix block (every distinct prefix once, in a
pool, right-aligned) followed by the rows' own tokens (right-aligned); each layer gathers the rows'
prefixes from the pool for its attention only (``SharedPrefixLayer``), so the per-row copy exists
for one layer at a time, never for the whole model.

Sliding-window models (Mistral, Gemma 2/3, ...) need more: transformers' sliding caches evict by slot
and its sliding masks measure the window in slots, pads included, so a padded row would see another
window than the same sequence alone. For them every layer keeps its full cache and the model gets
prepared 4-D masks computed from the rows' real positions, one per attention type.
"""
from __future__ import annotations

import dataclasses

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from kvinject.model_adapters.engine.attention import GROUPED_EAGER


@dataclasses.dataclass(frozen=True)
class RowCache:
    """Keys and values of one sequence's real tokens, per layer ``[kv_heads, length, head_dim]``:
    ``prefix``'s tokens (when given: a cache held once and shared, never copied into this row),
    then this row's own ``layers``.

    Rows are never modified in place: every operation returns new tensors, so a row captured from
    the baseline can feed any number of branches without changing the shared prefix.
    """

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    prefix: "RowCache | None" = None

    def __post_init__(self):
        if self.prefix is not None and self.prefix.prefix is not None:
            raise ValueError("a prefix cannot itself continue a prefix (one level of sharing)")

    @classmethod
    def continuing(cls, prefix: "RowCache") -> "RowCache":
        """A row that holds nothing of its own yet and continues ``prefix``."""
        return cls(prefix._own(0, 0), prefix)

    @property
    def own_length(self) -> int:
        return self.layers[0][0].shape[1]

    @property
    def prefix_length(self) -> int:
        return 0 if self.prefix is None else self.prefix.length

    @property
    def length(self) -> int:
        return self.prefix_length + self.own_length

    def _own(self, start: int, stop: int | None = None) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """This row's own slots ``start:stop`` (views, not copies)."""
        return tuple((k[:, start:stop], v[:, start:stop]) for k, v in self.layers)

    def materialised(self) -> "RowCache":
        """The same tokens held by this row alone (the prefix copied in)."""
        return self if self.prefix is None else self.prefix.then(RowCache(self.layers))

    def head(self, length: int) -> "RowCache":
        """The first ``length`` tokens (still continuing the prefix where they cover it)."""
        if length < self.prefix_length:
            return self.prefix.head(length)
        return RowCache(self._own(0, length - self.prefix_length), self.prefix)

    def tail(self, start: int) -> "RowCache":
        """The tokens from index ``start`` on (a row of its own)."""
        if start < self.prefix_length:
            return self.materialised().tail(start)
        return RowCache(self._own(start - self.prefix_length))

    def then(self, other: "RowCache") -> "RowCache":
        """This row followed by ``other`` (same model), continuing this row's prefix."""
        other = other.materialised()
        return RowCache(
            tuple(
                (torch.cat([k, k2], dim=1), torch.cat([v, v2], dim=1))
                for (k, v), (k2, v2) in zip(self.layers, other.layers)
            ),
            self.prefix,
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


class SharedPrefixLayer(DynamicLayer):
    """One layer of a ``PaddedBatch``: the pool of distinct prefixes ``[entries, kv_heads, prefix
    slots, head_dim]`` (entry 0 is empty: rows without a prefix), every row's entry (``index``) and
    the rows' own keys and values (``keys``, ``values``: the slots after the prefix block).

    ``update`` appends the fed tokens to the own slots and returns each row's whole context (its
    entry, then its own slots), gathered for this layer's attention and freed with it; with an empty
    prefix block it returns the own tensors as a ``DynamicLayer`` does. Lengths and masks count both
    blocks, so transformers sees one cache of prefix + own slots per row."""

    def __init__(self, pool: tuple[torch.Tensor, torch.Tensor] | None = None, index: torch.Tensor | None = None,
                 own: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.pool_keys, self.pool_values = pool if pool is not None else (None, None)
        self.index = index
        if own is not None:
            self.keys, self.values = own
            self.device, self.is_initialized = own[0].device, True

    @property
    def prefix_slots(self) -> int:
        return 0 if self.pool_keys is None else self.pool_keys.shape[-2]

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        if not self.prefix_slots:
            return keys, values
        return (torch.cat([self.pool_keys[self.index], keys], dim=-2),
                torch.cat([self.pool_values[self.index], values], dim=-2))

    @property
    def has_slots(self) -> bool:
        """Whether the own keys exist as a [rows, kv_heads, slots, head_dim] tensor (not lazily empty)."""
        return self.is_initialized and self.keys.dim() == 4

    def get_seq_length(self) -> int:
        return self.prefix_slots + (self.keys.shape[-2] if self.has_slots else 0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keys, self.values = self.keys[indices], self.values[indices]
        if self.index is not None:
            self.index = self.index[indices]


def cache_held_bytes(cache) -> int:
    """Keys and values a transformers cache holds between forwards: a PaddedBatch's own slots and its
    pool (once); the contexts gathered for one layer's attention are transient and not counted."""
    held = (getattr(layer, name, None) for layer in cache.layers for name in ("keys", "values", "pool_keys", "pool_values"))
    return sum(t.numel() * t.element_size() for t in held if isinstance(t, torch.Tensor))


class PaddedBatch:
    """Rows of (cache, next tokens) left-padded into one ``DynamicCache`` with a 2-D mask.

    Call ``feed_tokens`` with each row's next tokens (ragged lists are left-padded, leaving a masked
    hole between a row's cache and its tokens) and pass what it returns to the model. The mask's
    first ``prefix_slots`` columns are the prefix block (module docstring), the rest the own slots.
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
        self.device = model.device
        self.prefixes: list[RowCache | None] = [None]  # the pool's entries; entry 0: no prefix
        self.prefix_slots = 0
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        # No config: every layer keeps all its slots (a config would give sliding layers a
        # DynamicSlidingWindowLayer, which evicts by slot, pads included).
        self.cache = DynamicCache()
        self.cache.layer_class_to_replicate = SharedPrefixLayer
        self.add_rows(caches)

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
        """A copy of ``row``'s own real tokens as they stand now, continuing its prefix (not copied)."""
        real = self.mask[row, self.prefix_slots :].bool()
        layers = tuple((layer.keys[row][:, real], layer.values[row][:, real]) for layer in self.cache.layers)
        prefix = self.prefixes[int(self._row_entries()[row])]
        return RowCache(layers, prefix)

    def keep_rows(self, rows: list[int]) -> None:
        """Drop every other row (finished sequences stop costing compute), and the prefixes that no
        kept row continues."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self._drop_unused_prefixes()

    def add_rows(self, caches: list[RowCache | None]) -> None:
        """Append rows (after the existing ones) that start from ``caches``: every row's prefix and
        own tokens stay right-aligned in their blocks, the narrower side gets left padding (masked
        slots, so no row changes)."""
        row_entries, pool_entries = self._row_entries(), len(self.prefixes)
        entries = [self._entry(None if c is None else c.prefix) for c in caches]
        pool_grew = len(self.prefixes) > pool_entries  # else each running layer keeps its pool as it is
        prefix_slots = max(e.length for e in self.prefixes[1:]) if len(self.prefixes) > 1 else 0
        own_lengths = [0 if c is None else c.own_length for c in caches]
        own_slots = max(self.mask.shape[1] - self.prefix_slots, *own_lengths)
        grow_prefix, grow_own = prefix_slots - self.prefix_slots, own_slots - (self.mask.shape[1] - self.prefix_slots)
        pad = torch.nn.functional.pad
        old_prefix, old_own = self.mask[:, : self.prefix_slots], self.mask[:, self.prefix_slots :]
        added = torch.zeros(len(caches), prefix_slots + own_slots, dtype=torch.long, device=self.device)
        for row, (entry, length) in enumerate(zip(entries, own_lengths)):
            added[row, prefix_slots - self._entry_length(entry) : prefix_slots] = 1
            added[row, prefix_slots + own_slots - length :] = 1
        self.mask = torch.cat([torch.cat([pad(old_prefix, (grow_prefix, 0)), pad(old_own, (grow_own, 0))], dim=1),
                               added])
        self.prefix_slots = prefix_slots
        row_entries = torch.cat([row_entries, torch.tensor(entries, dtype=torch.long, device=self.device)])
        own_layers = _padded_layers(caches, own_slots)
        if own_layers is None:
            if not self.cache.layers and len(self.prefixes) == 1:
                return  # nothing cached anywhere: the layers start empty at the first update
            own_layers = (None for _ in range(self._layer_count()))
        layers = []
        for index, own in enumerate(own_layers):
            running = self.cache.layers[index] if index < len(self.cache.layers) else None
            own = own if own is not None else tuple(self._zeros_like_layer(index, len(caches), own_slots))
            if running is not None and running.has_slots:
                own = tuple(torch.cat([pad(old, (0, 0, grow_own, 0)), new])
                            for old, new in zip((running.keys, running.values), own))
            pool = (running.pool_keys, running.pool_values) if running is not None and not pool_grew else \
                self._pool_layer(index)
            layers.append(SharedPrefixLayer(pool, row_entries, own))
        self.cache.layers = layers

    # ------------------------------------------------------------------------------ the prefix pool

    def _entry(self, prefix: RowCache | None) -> int:
        """The pool index of ``prefix`` (added when new; prefixes are the same when they are the same object)."""
        if prefix is None or prefix.length == 0:
            return 0
        found = next((i for i, p in enumerate(self.prefixes) if p is prefix), None)
        if found is None:
            self.prefixes.append(prefix)
            found = len(self.prefixes) - 1
        return found

    def _entry_length(self, entry: int) -> int:
        return 0 if entry == 0 else self.prefixes[entry].length

    def _row_entries(self) -> torch.Tensor:
        layer = self.cache.layers[0] if self.cache.layers else None
        if layer is None or getattr(layer, "index", None) is None:
            return torch.zeros(self.size, dtype=torch.long, device=self.device)
        return layer.index

    def _layer_count(self) -> int:
        if self.cache.layers:
            return len(self.cache.layers)
        return len(self.prefixes[1].layers)

    def _zeros_like_layer(self, index: int, rows: int, slots: int):
        """Zeros ``[rows, kv_heads, slots, head_dim]`` (keys, values) shaped like layer ``index``."""
        if index < len(self.cache.layers) and self.cache.layers[index].has_slots:
            templates = (self.cache.layers[index].keys, self.cache.layers[index].values)
            return (t.new_zeros((rows, t.shape[1], slots, t.shape[3])) for t in templates)
        keys, values = self.prefixes[1].layers[index]
        return (t.new_zeros((rows, t.shape[0], slots, t.shape[2])) for t in (keys, values))

    def _pool_layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The pool of layer ``index``: every entry right-aligned in ``prefix_slots`` (zeros before)."""
        if not self.prefix_slots:
            return None
        return _padded_layer([None, *self.prefixes[1:]], self.prefix_slots, index)

    def _drop_unused_prefixes(self) -> None:
        used = sorted(set(self._row_entries().tolist()) | {0})
        if len(used) == len(self.prefixes):
            return
        remap = torch.zeros(len(self.prefixes), dtype=torch.long, device=self.device)
        remap[torch.tensor(used, device=self.device)] = torch.arange(len(used), device=self.device)
        self.prefixes = [self.prefixes[i] for i in used]
        prefix_slots = max((p.length for p in self.prefixes[1:]), default=0)
        cut = self.prefix_slots - prefix_slots
        self.mask = self.mask[:, cut:]
        self.prefix_slots = prefix_slots
        keep = torch.tensor(used, dtype=torch.long, device=self.device)
        for layer in self.cache.layers:
            layer.index = remap[layer.index]
            if prefix_slots:
                layer.pool_keys = layer.pool_keys[keep][:, :, cut:]
                layer.pool_values = layer.pool_values[keep][:, :, cut:]
            else:
                layer.pool_keys = layer.pool_values = None


def _padded_layers(caches: list[RowCache | None], width: int):
    """Per layer the rows' own (keys, values) of shape [rows, kv_heads, width, head_dim], zeros in the
    left padding, one layer at a time (None: no row holds a token of its own)."""
    if not any(c is not None and c.own_length > 0 for c in caches):
        return None
    template = next(c for c in caches if c is not None and c.own_length > 0)
    return (_padded_layer(caches, width, index) for index in range(len(template.layers)))


def _padded_layer(caches: list[RowCache | None], width: int, index: int):
    """Layer ``index`` of the caches' own tokens, right-aligned in ``width`` slots (zeros before; a
    None or empty cache gives a row of zeros). Pads are masked out of every attention."""
    k_ref, v_ref = next(c for c in caches if c is not None and c.own_length > 0).layers[index]
    keys = k_ref.new_zeros((len(caches), k_ref.shape[0], width, k_ref.shape[2]))
    values = v_ref.new_zeros((len(caches), v_ref.shape[0], width, v_ref.shape[2]))
    for row, cache in enumerate(caches):
        if cache is not None and cache.own_length > 0:
            keys[row, :, width - cache.own_length :] = cache.layers[index][0]
            values[row, :, width - cache.own_length :] = cache.layers[index][1]
    return keys, values
