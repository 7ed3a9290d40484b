"""The trace of one problem, schema version 1: its constants, builders and ``validate_trace``.

The one home of the schema: the engine writes traces with these builders, the metrics read them
with these constants, and the test fixtures are built and validated here too.

The schema is specified in docs/architecture.md section 3 (one JSON-serialisable dict per doc with
the settings, both prompts and one entry per condition: baseline, oracle, injection@N, noise@N).
Builders take plain Python values so a trace never holds tensors.
"""
from __future__ import annotations

import math

SCHEMA_VERSION = 1
# Attention segments of the run context; the scorer labels each token with its index here.
SEGMENTS = ("sink", "original_prompt", "generated_before", "injected", "generated_after")
STOP_REASONS = ("stop_sequence", "eos", "max_new_tokens")
STRATEGIES = ("append", "replace")  # append the new problem to the cache / swap the prompt's cache
NOISE_KINDS = ("random", "shuffle")  # seeded random non-special tokens / the injected tokens shuffled
SCALAR_SERIES = ("logp_run", "logp_old", "logp_new", "kl_run_new", "kl_run_old", "kl_old_new", "entropy_run")
SETTINGS_KEYS = ("injection_points", "strategy", "noise", "track_attention", "track_hidden", "seed",
                 "max_new_tokens", "stop_sequences")
# Optional settings: the precision the model decoded in and the one the series were scored in.
# Absent (traces written before 16-bit support): float32 for both.
PRECISION_KEYS = ("dtype", "score_dtype")
PRECISIONS = ("float32", "bfloat16", "float16")


def condition(prompt: str, ids: list[int], text: str, stop_reason: str) -> dict:
    """One condition's trace entry: its prompt, generated ids and text, and why it stopped (STOP_REASONS)."""
    return {"prompt": prompt, "ids": list(ids), "text": text, "stop_reason": stop_reason}


def injection_condition(
    run: dict, point: int, injected_ids: list[int], injected_text: str, pre_ids: list[int], post_ids: list[int],
    series: dict, not_injected_reason: str | None = None, noise_kind: str | None = None,
) -> dict:
    """``run`` is the condition() of the branch: ids/text are pre + post (see the schema)."""
    entry = dict(run)
    entry.update(
        injection_point=point,
        injected=not_injected_reason is None,
        not_injected_reason=not_injected_reason,
        pre_ids=list(pre_ids),
        injected_ids=list(injected_ids),
        injected_text=injected_text,
        post_ids=list(post_ids),
        series=series,
    )
    if noise_kind is not None:
        entry["noise_kind"] = noise_kind
    return entry


def empty_series(track_attention: bool, track_hidden: bool) -> dict:
    """The empty per-token series of an injection condition: the scalar ones, plus attention per segment and the
    hidden-state cosines when tracked."""
    series = {key: [] for key in SCALAR_SERIES}
    if track_attention:
        series["attention"] = {segment: [] for segment in SEGMENTS}
    if track_hidden:
        series["hidden_cos_new"] = []
        series["hidden_cos_old"] = []
    return series


def build_trace(doc_id: str, settings: dict, prompts: dict, conditions: dict) -> dict:
    """The trace of one doc (schema version 1) from its settings, prompts and conditions."""
    return {"schema_version": SCHEMA_VERSION, "doc_id": doc_id, "settings": settings, "prompts": prompts,
            "conditions": conditions}


# ----------------------------------------------------------------------------------------- validation


def _fail(path: str, message: str):
    raise ValueError(f"trace field {path}: {message}")


def _require(mapping, key: str, path: str, kind):
    if not isinstance(mapping, dict) or key not in mapping:
        _fail(f"{path}.{key}" if path else key, "missing")
    value = mapping[key]
    if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        _fail(f"{path}.{key}" if path else key, f"expected {names}, got {type(value).__name__}")
    return value


def _ids(mapping, key: str, path: str) -> list:
    ids = _require(mapping, key, path, list)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        _fail(f"{path}.{key}", "expected a list of ints")
    return ids


def _floats(values, path: str, length: int) -> None:
    if not isinstance(values, list) or len(values) != length:
        _fail(path, f"expected a list of {length} floats (one per post token)")
    for value in values:
        if not isinstance(value, float) or not math.isfinite(value):
            _fail(path, f"expected finite floats, got {value!r}")


def _layer_rows(values, path: str, length: int) -> None:
    if not isinstance(values, list) or len(values) != length:
        _fail(path, f"expected {length} rows (one per post token)")
    widths = {len(row) if isinstance(row, list) else -1 for row in values}
    if len(widths) > 1 or -1 in widths:
        _fail(path, "expected one list of per-layer floats per post token, all of the same length")
    for row in values:
        _floats(row, path, len(row))


def _validate_condition(entry, path: str) -> None:
    if _require(entry, "prompt", path, str) not in ("original", "alternative"):
        _fail(f"{path}.prompt", "expected 'original' or 'alternative'")
    _ids(entry, "ids", path)
    _require(entry, "text", path, str)
    if _require(entry, "stop_reason", path, str) not in STOP_REASONS:
        _fail(f"{path}.stop_reason", f"expected one of {STOP_REASONS}")


def _validate_series(series, path: str, length: int, settings: dict) -> None:
    for key in SCALAR_SERIES:
        _floats(_require(series, key, path, list), f"{path}.{key}", length)
    if settings["track_attention"]:
        attention = _require(series, "attention", path, dict)
        for segment in SEGMENTS:
            _layer_rows(_require(attention, segment, f"{path}.attention", list), f"{path}.attention.{segment}", length)
    if settings["track_hidden"]:
        for key in ("hidden_cos_new", "hidden_cos_old"):
            _layer_rows(_require(series, key, path, list), f"{path}.{key}", length)


def _validate_injection(entry, path: str, point: int, settings: dict, noise: bool) -> None:
    _validate_condition(entry, path)
    if _require(entry, "injection_point", path, int) != point:
        _fail(f"{path}.injection_point", f"expected {point}")
    injected = _require(entry, "injected", path, bool)
    reason = _require(entry, "not_injected_reason", path, None)
    if injected != (reason is None) or not (reason is None or isinstance(reason, str)):
        _fail(f"{path}.not_injected_reason", "must be null exactly when injected is true, else a string")
    pre, post = _ids(entry, "pre_ids", path), _ids(entry, "post_ids", path)
    _ids(entry, "injected_ids", path)
    _require(entry, "injected_text", path, str)
    if injected and len(pre) != point:
        _fail(f"{path}.pre_ids", f"expected {point} ids (the injection point)")
    if entry["ids"] != pre + post:
        _fail(f"{path}.ids", "expected pre_ids + post_ids")
    if noise and _require(entry, "noise_kind", path, str) not in NOISE_KINDS:
        _fail(f"{path}.noise_kind", f"expected one of {NOISE_KINDS}")
    _validate_series(_require(entry, "series", path, dict), f"{path}.series", len(post), settings)


def validate_trace(trace) -> None:
    """Raise ValueError naming the first missing or wrong field of a schema-1 trace."""
    if _require(trace, "schema_version", "", int) != SCHEMA_VERSION:
        _fail("schema_version", f"expected {SCHEMA_VERSION}")
    _require(trace, "doc_id", "", str)
    settings = _require(trace, "settings", "", dict)
    for key in SETTINGS_KEYS:
        _require(settings, key, "settings", None)
    for key in PRECISION_KEYS:
        if key in settings and settings[key] not in PRECISIONS:
            _fail(f"settings.{key}", f"expected one of {', '.join(PRECISIONS)}")
    points = _require(settings, "injection_points", "settings", list)
    prompts = _require(trace, "prompts", "", dict)
    for name in ("original", "alternative"):
        prompt = _require(prompts, name, "prompts", dict)
        _require(prompt, "text", f"prompts.{name}", str)
        _ids(prompt, "ids", f"prompts.{name}")
    conditions = _require(trace, "conditions", "", dict)
    _validate_condition(_require(conditions, "baseline", "conditions", dict), "conditions.baseline")
    _validate_condition(_require(conditions, "oracle", "conditions", dict), "conditions.oracle")
    expected = {"baseline", "oracle"}
    for point in points:
        for kind in ("injection", "noise"):
            name = f"{kind}@{point}"
            expected.add(name)
            entry = _require(conditions, name, "conditions", dict)
            _validate_injection(entry, f"conditions.{name}", point, settings, noise=kind == "noise")
    extra = sorted(set(conditions) - expected)
    if extra:
        _fail(f"conditions.{extra[0]}", "not a condition of these settings")
