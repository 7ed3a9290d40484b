"""Check adaptation docs against the doc contract (docs/architecture.md section 1) when a dataset loads.

A malformed doc stops the load with an error naming the doc id and the field, instead of surfacing later
as a confusing failure inside the model adapter or the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import datasets

CONTRACT_FIELDS = (
    "id",
    "variation_type",
    "original_question",
    "alternative_question",
    "original_answer",
    "alternative_answer",
)


class MalformedDocError(ValueError):
    """A doc breaks the contract; ``field`` and ``problem`` say how, so a caller can word it its own way."""

    def __init__(self, doc: str, field: str, problem: str):
        super().__init__(f"{doc}: field {field!r} {problem}")
        self.doc, self.field, self.problem = doc, field, problem

    def __reduce__(self):  # rebuilt from its parts when pickled (e.g. by a worker process)
        return type(self), (self.doc, self.field, self.problem)


def is_number(text: str) -> bool:
    """A gold answer that numeric matching can use: an integer, decimal or fraction such as 3/4."""
    try:
        Fraction(text)
    except (ValueError, ZeroDivisionError):
        return False
    return True


@dataclass(frozen=True)
class DocSchema:
    variation_types: frozenset[str]
    extra_text_fields: tuple[str, ...] = ()
    list_fields: tuple[str, ...] = ()  # non-empty lists of non-empty strings
    # field -> predicate on its (string) value, with a description of what is expected
    value_checks: dict[str, tuple[Callable[[str], bool], str]] = field(default_factory=dict)


def validated_test_split(docs: list[dict], schema: DocSchema) -> datasets.DatasetDict:
    """The docs as a ``test`` split, after checking each against ``schema`` (MalformedDocError on the first bad one)."""
    for position, doc in enumerate(docs):
        validate_doc(doc, schema, position)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def validate_doc(doc: dict, schema: DocSchema, position: int) -> None:
    """Raise MalformedDocError naming the doc and the field of the first breach of the contract or ``schema``;
    a doc without an id is named by its ``position``."""
    doc_id = doc.get("id")
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise MalformedDocError(f"doc at position {position}", "id", "is missing or empty")

    def fail(name: str, problem: str) -> None:
        raise MalformedDocError(f"doc {doc_id!r}", name, problem)

    for name in CONTRACT_FIELDS[1:] + schema.extra_text_fields:
        value = doc.get(name)
        if not isinstance(value, str) or not value.strip():
            fail(name, f"must be a non-empty string, got {value!r}")
    if doc["variation_type"] not in schema.variation_types:
        fail("variation_type", f"is {doc['variation_type']!r}, expected one of {sorted(schema.variation_types)}")
    if doc["variation_type"] == "identical" and doc["alternative_question"] != doc["original_question"]:
        fail("alternative_question", "must equal original_question for an identical control")
    for name in schema.list_fields:
        value = doc.get(name)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            fail(name, f"must be a non-empty list of non-empty strings, got {value!r}")
    for name, (check, expected) in schema.value_checks.items():
        if not check(doc[name]):
            fail(name, f"must be {expected}, got {doc[name]!r}")
