"""What a doc's trace depends on, as JSON: the key of the per-doc result store (result_store.py).

A stored trace may only be reused when every input that can change it is the same: the weights and
tokenizer files, how they are loaded (dtype, device kind, attention kernel, quantisation), the
injection settings and template, the doc's prompts and generation settings, and the code that
computes it (package version plus a digest of the adapter's sources, so an edited engine never
serves traces of its previous version). Output folders (UNFINGERPRINTED_ARGS) are left out: they do not change a trace.
Batch size is left out in float32, where it changes values by float rounding only (~1e-6, far
below the adapted rule's minimum gap), but kept in 16-bit: there a batch of another shape rounds
differently and can turn a near-tie into other greedy ids (bf16: batch 1 vs 3 on a tiny Mistral).
A 16-bit trace also depends on the other docs of its batch (their lengths set the padding), so a
resumed 16-bit run equals the uninterrupted one up to that rounding (metrics/README.md, Precision).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import kvinject

# --model_args by what they do to a trace (every other one is a measurement setting: the injection
# settings, template and turn, which the fingerprint and each doc's key hold).
# Which model, loaded how: in the fingerprint through the weights' identity and the load settings.
MODEL_ARGS = ("pretrained", "revision", "gguf_file", "dtype", "device", "load_in_4bit", "trust_remote_code",
              "attn_implementation")
# How fast and where results go: they never change a trace, so the fingerprint leaves them out.
UNFINGERPRINTED_ARGS = ("batch_size", "max_batch_size", "trace_dir", "result_store")

_CONTENT_HASH_LIMIT = 64 * 2**20  # smaller files (configs, tokenizers) are hashed; weights use size+mtime
_SOURCES = (Path(__file__).parent, Path(kvinject.__file__).parent / "trace_schema.py")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_manifest(folder: str | os.PathLike) -> list[list]:
    """One entry per file: relative path, size, then a content hash (small files) or, for weights,
    the modification time and the resolved file name (a Hub cache names its blobs by their sha256).
    Hashing a 15 GB checkpoint at every start would cost minutes; a copied or touched weight file
    only makes the run recompute, never reuse a wrong trace."""
    root = Path(folder)
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        identity = (
            _sha256_file(path)
            if stat.st_size <= _CONTENT_HASH_LIMIT
            else f"mtime_ns={stat.st_mtime_ns} blob={path.resolve().name}"
        )
        entries.append([path.relative_to(root).as_posix(), stat.st_size, identity])
    return entries


def weights_identity(location: str, revision: str | None, model) -> dict:
    """The files a model was loaded from: a local folder's manifest, or the Hub snapshot's."""
    if Path(location).is_dir():
        return {"folder_manifest": folder_manifest(location)}
    identity = {"hub_id": location, "revision": revision, "commit": getattr(model.config, "_commit_hash", None)}
    try:
        from huggingface_hub import snapshot_download

        identity["folder_manifest"] = folder_manifest(
            snapshot_download(location, revision=revision, local_files_only=True)
        )
    except Exception:  # not in the local Hub cache as a snapshot: the commit hash identifies it
        pass
    return identity


def source_digest() -> str:
    """sha256 over the adapter's and the trace schema's Python sources."""
    digest = hashlib.sha256()
    for base in _SOURCES:
        files = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_fingerprint(args, location: str, model, device: str) -> dict:
    """Everything of a run that changes a trace (``args`` is model_args.ModelArgs)."""
    import torch
    import transformers

    return {
        "kvinject": kvinject.__version__,
        "sources": source_digest(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pretrained": args.pretrained,
        "gguf_file": args.gguf_file,
        "weights": weights_identity(location, args.revision, model),
        "dtype": str(model.dtype),
        **_low_precision_inputs(args, model.dtype),
        "device_kind": device.split(":")[0],
        "attention": getattr(model.config, "_attn_implementation", None),
        "load_in_4bit": args.load_in_4bit,
        "injection": args.injection.as_dict(),
        "injection_template": args.injection_template,
    }


def _low_precision_inputs(args, dtype) -> dict:
    """What changes a trace in 16-bit only (module docstring); nothing in float32."""
    import torch

    if dtype == torch.float32:
        return {}
    # batch_size=auto starts from the largest batch that fits, so the bound stands for it.
    return {"score_dtype": args.score_dtype, "batch_size": [args.batch_size, args.max_batch_size],
            "share_prompts": args.share_prompts}


def doc_key(fingerprint_digest: str, problem) -> str:
    """The store key of one doc: the run's fingerprint digest plus the engine's whole input for it
    (prompts, injected text, token budget, stop sequences, doc id, which seeds its noise control)."""
    payload = json.dumps([fingerprint_digest, dataclasses.asdict(problem)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def digest(fingerprint: dict) -> str:
    """The sha256 hex digest of the fingerprint's key-sorted JSON."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode("utf-8")).hexdigest()
