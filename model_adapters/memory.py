"""Memory: how many docs fit in one batch (``batch_size=auto``), and what counts as out of memory.

A doc's peak is its rows in the decoding loop (engine/decoding.py, engine/scoring.py): the baseline
and the oracle, and for each of its 2 x points branches (injection and noise at each N) three rows
(run, old, new), all in the model's dtype (scoring runs in it too), beside the caches forked from
the baseline (one per point) and the oracle. Each row holds its prompt, about prompt + injected
segment + token budget slots once padded; with ``share_prompts`` every row continues one of the
doc's prompts, held once (engine/row_cache.py: the prompt caches and the batch pool's padded copy),
and holds only its own tokens, at most segment + budget + 1 slots, plus, for one layer at a time,
the rows' whole contexts gathered for that layer's attention.
"""
from __future__ import annotations

import dataclasses

# CUDA allocation failures that PyTorch raises as a plain RuntimeError (cuBLAS/cuDNN workspaces,
# allocations inside kernels) rather than torch.OutOfMemoryError.
_ALLOCATION_ERRORS = ("CUDA out of memory", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
                      "CUDNN_STATUS_ALLOC_FAILED")
FREE_MEMORY_SHARE = 0.5  # of the free memory, for the batch's caches (activations and logits need the rest)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is torch.OutOfMemoryError or a CUDA allocation failure raised as RuntimeError."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(marker in str(error) for marker in _ALLOCATION_ERRORS))


def free_memory() -> None:
    """Return a failed batch's memory (call outside the except that caught the error)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclasses.dataclass(frozen=True)
class DocShape:
    """Token counts of one doc as the engine runs it."""

    prompt: int  # the longer of the original and alternative prompt
    segment: int  # the injected segment (append) or 0 (replace swaps the prompt)
    budget: int  # max_new_tokens
    points: int  # injection points
    strategy: str = "append"  # replace: every noise@N swaps in a control prompt of its own


def doc_shape(tokenizer, problem, strategy: str, points: int) -> DocShape:
    """The DocShape of ``problem`` (an engine Problem) as the engine runs it with ``strategy``."""
    from kvinject.model_adapters.engine.tokens import encode_prompt, encode_segment

    prompt = max(len(encode_prompt(tokenizer, problem.original_prompt)),
                 len(encode_prompt(tokenizer, problem.alternative_prompt)))
    segment = len(encode_segment(tokenizer, problem.injection_text)) if strategy == "append" else 0
    return DocShape(prompt, segment, problem.max_new_tokens, points, strategy)


def hidden_layers(config) -> int:
    """The model's hidden (decoder) layers."""
    return config.get_text_config().num_hidden_layers


def kv_bytes_per_position(config, itemsize: int) -> int:
    """Keys and values of one position over all layers."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    return 2 * hidden_layers(config) * kv_heads * head_dim * itemsize


def doc_kv_bytes(shape: DocShape, position_bytes: int, score_position_bytes: int, layers: int,
                 share_prompts: bool) -> int:
    """The peak KV-cache bytes of one doc (module docstring); ``layers``: the model's hidden layers
    (``position_bytes`` covers them all; gathered contexts exist for one layer at a time)."""
    branches = 2 * shape.points
    if not share_prompts:  # every row and fork holds its prompt: about prompt + segment + budget slots
        width = shape.prompt + shape.segment + shape.budget
        return (2 + branches) * width * position_bytes + 3 * branches * width * score_position_bytes
    own = shape.segment + shape.budget + 1  # a row's own slots, padding included
    prompts = 2 + (shape.points if shape.strategy == "replace" else 0)  # original, alternative, control prompts
    held = (2 + branches) * own * position_bytes  # baseline, oracle and every branch's run row
    scoring = 2 * branches * own * score_position_bytes  # every branch's old and new rows
    shared = 2 * prompts * shape.prompt * position_bytes  # the prompt caches and the pool's copy
    forks = (shape.points + 1) * own * position_bytes  # the baseline after N tokens, the oracle's prompt
    rows = 2 + 3 * branches
    gathered = 2 * rows * (shape.prompt + own) * max(position_bytes, score_position_bytes) // layers
    return held + scoring + shared + forks + gathered


def fitting_batch_size(free_bytes: int, shapes: list[DocShape], position_bytes: int, score_position_bytes: int,
                       layers: int, share_prompts: bool, maximum: int) -> int:
    """The most docs per batch whose caches fit in FREE_MEMORY_SHARE of ``free_bytes``, sized for the
    largest doc; at least 1 (a doc that does not fit runs alone and may still run out of memory)."""
    if not shapes:
        return max(1, maximum)
    largest = max(doc_kv_bytes(shape, position_bytes, score_position_bytes, layers, share_prompts)
                  for shape in shapes)
    return max(1, min(maximum, int(FREE_MEMORY_SHARE * free_bytes // largest)))


def device_free_bytes(device: str) -> int | None:
    """Free memory of a CUDA ``device`` in bytes; None elsewhere (CPU batches are not sized from memory)."""
    if not device.startswith("cuda"):
        return None
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return free
