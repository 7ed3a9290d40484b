"""lm-eval `custom_dataset` for adaptation_math: build (or reuse) the augmented MAWPS set and validate it.

The source is the task metadata's ``mawps_source`` (``--metadata '{"mawps_source": PATH}'``), else
KVINJECT_MAWPS_SOURCE, else the Hub's MU-NLPC/Calc-mawps; the results JSON records it (AdaptationTask's
``dataset_record``). The built set is
cached in kvinject.paths.user_cache_dir() ($KVINJECT_CACHE, else ~/.cache/kvinject), keyed by the source
checksum and a hash of the builder's own code, so a changed source or builder never serves a stale set
(no hand-kept version number to forget).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import datasets

from kvinject.adaptation_tasks.adaptation_math.mawps_builder import VARIATION_TYPES, build_augmented_set
from kvinject.adaptation_tasks.adaptation_math.mawps_sources import DEFAULT_SOURCE, SOURCE_ENV_VAR, read_mawps_source
from kvinject.adaptation_tasks.docs import DocSchema, is_number, validated_test_split
from kvinject.paths import user_cache_dir

# Everything that decides the built set: the readers, the text rendering, the arithmetic and the builder.
BUILDER_MODULES = (
    "mawps_sources.py", "mawps_text.py", "expression.py", "added_step.py", "story_checks.py", "mawps_builder.py",
)


MATH_SCHEMA = DocSchema(
    variation_types=frozenset(VARIATION_TYPES),
    extra_text_fields=("source_id", "original_equation", "alternative_equation"),
    value_checks={
        "original_answer": (is_number, "a number"),
        "alternative_answer": (is_number, "a number"),
    },
)


def dataset_source(metadata: dict) -> str:
    """The raw MAWPS source: metadata ``mawps_source``, else $KVINJECT_MAWPS_SOURCE, else the Hub's copy."""
    return metadata.get("mawps_source") or os.environ.get(SOURCE_ENV_VAR) or DEFAULT_SOURCE


def load_math_dataset(**metadata) -> datasets.DatasetDict:
    """lm-eval passes the task metadata (and leaked model_args) as keyword arguments."""
    return validated_test_split(augmented_math_set(dataset_source(metadata)), MATH_SCHEMA)


def builder_fingerprint() -> str:
    """sha256 over the source of the modules that build the set."""
    digest = hashlib.sha256()
    for name in BUILDER_MODULES:
        digest.update(name.encode() + b"\0" + (Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def augmented_math_set(source: str) -> list[dict]:
    """The docs built from the MAWPS ``source`` (MawpsSourceError if unreadable), cached per source checksum and
    builder fingerprint; a damaged cache file is rebuilt, a new one is written atomically."""
    mawps = read_mawps_source(source)
    cache_file = user_cache_dir() / f"adaptation_math-{builder_fingerprint()[:12]}-{mawps.checksum[:16]}.json"
    if cache_file.is_file():
        try:
            return json.loads(cache_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache entry is simply rebuilt
    docs = build_augmented_set(mawps.problems)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_suffix(f".{os.getpid()}.tmp")  # rename is atomic: parallel ranks never read half a file
    partial.write_text(json.dumps(docs, ensure_ascii=False, indent=1), encoding="utf-8")
    partial.replace(cache_file)
    return docs

