"""Read a user's pairs file (JSON or JSON lines) into adaptation docs; errors name the line and field.

Each pair is an object with
  ``original``, ``alternative``            the two problems (non-empty strings; equal for an identical control)
  ``original_answer``, ``alternative_answer``  a string or number, or a non-empty list of accepted aliases
  ``id`` (optional)                        default ``pair-<n>``, n = the pair's position in the file (from 1)
  ``variation_type`` (optional)            default ``identical`` when the problems are equal, else ``changed``
The file is either JSON lines (one object per line) or one JSON array of objects (or ``{"pairs": [...]}``).
Answers that are all numbers are matched numerically (math matcher), any other as aliases (semantic matcher).
"""
from __future__ import annotations

import json
from pathlib import Path

import datasets

from kvinject.adaptation_tasks.docs import DocSchema, MalformedDocError, is_number, validate_doc

REQUIRED = ("original", "alternative", "original_answer", "alternative_answer")
# The doc contract's names of the pair file's fields where they differ (for messages that name the file's).
PAIR_FIELD_OF = {"original_question": "original", "alternative_question": "alternative"}
OPTIONAL = ("id", "variation_type")


class PairsFileError(ValueError):
    """A pairs file cannot be read; the message names the file, the line and the field."""


def load_pairs_dataset(dataset_path: str | None = None, config_source: str | None = None, **_metadata) -> datasets.DatasetDict:
    """lm-eval ``custom_dataset``: the task metadata's ``dataset_path`` (a relative path is looked up in
    the working folder, then beside the task YAML ``config_source``)."""
    if not dataset_path:
        raise PairsFileError(
            "task adaptation_pairs needs a pairs file: set metadata.dataset_path in your task YAML, or run "
            "with --metadata '{\"dataset_path\": \"pairs.jsonl\"}' (format: adaptation_tasks/README.md)"
        )
    docs = read_pairs(resolve_pairs_path(dataset_path, config_source))
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def resolve_pairs_path(dataset_path: str, config_source: str | None = None) -> Path:
    """The resolved pairs file: ``dataset_path`` as given, else beside the task YAML ``config_source``;
    PairsFileError naming every place looked at."""
    candidates = [Path(dataset_path).expanduser()]
    if not candidates[0].is_absolute() and config_source and config_source != "inline":
        candidates.append(Path(config_source).parent / dataset_path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise PairsFileError(f"pairs file {dataset_path!r} not found (looked at {', '.join(map(str, candidates))})")


def read_pairs(path: str | Path) -> list[dict]:
    """The docs of a pairs file, validated against the doc contract (adaptation_tasks/docs.py)."""
    path = Path(path)
    docs, seen = [], {}
    for position, (line, pair) in enumerate(_objects_with_lines(path), start=1):
        doc = pair_to_doc(pair, line, path, position)
        if doc["id"] in seen:
            raise PairsFileError(f"{path}, line {line}: field 'id' {doc['id']!r} repeats the pair on line {seen[doc['id']]}")
        seen[doc["id"]] = line
        docs.append(doc)
    if not docs:
        raise PairsFileError(f"{path}: no pairs in the file")
    return docs


def pair_to_doc(pair, line: int, path: Path, position: int) -> dict:
    """The adaptation doc of one pair (default id ``pair-<position>``); PairsFileError naming the file, the line
    and the field of a malformed pair."""
    where = f"{path}, line {line}"
    if not isinstance(pair, dict):
        raise PairsFileError(f"{where}: expected an object with fields {', '.join(REQUIRED)}, got {type(pair).__name__}")
    unknown = sorted(set(pair) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise PairsFileError(f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(REQUIRED + OPTIONAL)}")
    for name in REQUIRED:
        if name not in pair:
            raise PairsFileError(f"{where}: field {name!r} is missing")
    aliases = {name: _aliases(pair[name], name, where) for name in ("original_answer", "alternative_answer")}
    numeric = all(is_number(alias) for values in aliases.values() for alias in values)
    original, alternative = pair["original"], pair["alternative"]
    default_type = "identical" if original == alternative else "changed"
    doc = {
        "id": str(pair.get("id", f"pair-{position}")),
        "variation_type": pair.get("variation_type", default_type),
        "original_question": original,
        "alternative_question": alternative,
        "original_answer": aliases["original_answer"][0],
        "alternative_answer": aliases["alternative_answer"][0],
        "original_aliases": aliases["original_answer"],
        "alternative_aliases": aliases["alternative_answer"],
        "answer_kind": "number" if numeric else "text",
    }
    schema = DocSchema(variation_types=frozenset({doc["variation_type"]}) if isinstance(doc["variation_type"], str) else frozenset(),
                       list_fields=("original_aliases", "alternative_aliases"))
    try:
        validate_doc(doc, schema, line)
    except MalformedDocError as error:
        raise PairsFileError(f"{where}: field {PAIR_FIELD_OF.get(error.field, error.field)!r} {error.problem}") from None
    return doc


def _aliases(value, name: str, where: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip() for v in values):
        raise PairsFileError(f"{where}: field {name!r} must be a string, a number or a non-empty list of them, got {value!r}")
    return [str(v).strip() for v in values]


def _objects_with_lines(path: Path):
    """(line number, object) for each pair: JSON lines, or the items of one JSON array / {"pairs": [...]}."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PairsFileError(f"pairs file {path}: cannot be read ({error})") from None
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and _is_single_document(text)):
        yield from _array_items(text, path)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise PairsFileError(f"{path}, line {number}: not valid JSON ({error.msg}, column {error.colno})") from None


def _is_single_document(text: str) -> bool:
    try:
        document = json.loads(text)
        return isinstance(document, dict) and "pairs" in document
    except json.JSONDecodeError:
        return False  # JSON lines (or broken JSON, reported line by line)


def _array_items(text: str, path: Path):
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise PairsFileError(f"{path}, line {error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None
    items = document["pairs"] if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise PairsFileError(f"{path}, line 1: field 'pairs' must be a list of pair objects")
    # Re-scan the array to find the line on which each item starts, for error messages.
    decoder, array_at = json.JSONDecoder(), text.index("[", text.index("pairs") if isinstance(document, dict) else 0)
    position = array_at + 1
    for item in items:
        while text[position] in " \t\r\n,":
            position += 1
        _, end = decoder.raw_decode(text, position)
        yield text.count("\n", 0, position) + 1, item
        position = end
