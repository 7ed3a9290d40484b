"""lm-eval `custom_dataset` for adaptation_semantic: the committed pairs, located next to this module."""
from __future__ import annotations

import json

import datasets

from kvinject.adaptation_tasks.adaptation_semantic.build_pairs import OUTPUT_PATH, QUOTAS
from kvinject.adaptation_tasks.docs import DocSchema, validated_test_split

SEMANTIC_SCHEMA = DocSchema(
    variation_types=frozenset({"identical", *QUOTAS}),
    extra_text_fields=("question_type", "original_subject", "alternative_subject"),
    list_fields=("original_aliases", "alternative_aliases"),
)


def load_semantic_dataset(**_metadata) -> datasets.DatasetDict:
    """lm-eval passes the task metadata (and leaked model_args) as keyword arguments; none are needed."""
    pairs = json.loads(OUTPUT_PATH.read_text(encoding="utf-8"))["pairs"]
    return validated_test_split(pairs, SEMANTIC_SCHEMA)
