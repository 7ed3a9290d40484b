"""Builds valid schema-v1 traces (docs/architecture.md section 3) from arrays, for the metric tests.

The engine produces the same schema with the same builders (kvinject.trace_schema); these helpers
let a test state only the series it cares about, and every trace they build passes validate_trace.
Imported by the other tests/test_metrics_*.py modules (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json

import numpy as np

from kvinject import trace_schema as schema
from kvinject.trace_schema import SEGMENTS
ORIGINAL_IDS = [1, 11, 12, 13, 14]
ALTERNATIVE_IDS = [1, 11, 12, 23, 14]


def _per_token(value, length: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=float), (length,)).copy()


def _by_token_and_layer(value) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    return array[:, None] if array.ndim == 1 else array


def attention_segments(injected, original, sink=0.25, n_layers=2, length=None) -> dict:
    """Attention {segment: (T, n_layers)} whose non-sink share is split as given.

    injected / original: the sink-excluded mass of the injected segment / original prompt, per
    token (T,) or per token and layer (T, n_layers) (also in run_series); the rest goes half to
    each generated segment.
    """
    injected, original = (_by_token_and_layer(mass) for mass in (injected, original))
    shape = (length if length is not None else injected.shape[0], n_layers)
    injected, original = np.broadcast_to(injected, shape), np.broadcast_to(original, shape)
    rest = (1.0 - injected - original) / 2
    non_sink = 1.0 - sink
    masses = {"sink": np.full(shape, sink), "original_prompt": original * non_sink,
              "generated_before": rest * non_sink, "injected": injected * non_sink,
              "generated_after": rest * non_sink}
    return {name: masses[name].tolist() for name in SEGMENTS}


def run_series(kl_run_old, kl_run_new=None, *, logp_old=None, logp_new=None,
               injected_mass=None, original_mass=None, hidden_cos_new=None, n_layers=2,
               track_attention=True, track_hidden=True) -> dict:
    """The "series" of one run from per-token arrays (scalars broadcast over the run).

    kl_run_new defaults to 1 - nothing else is needed by most tests; log-probabilities default to
    -1 (log-ratio 0); attention masses to 0.3 injected / 0.3 original; hidden cosines to 0.5.
    """
    kl_run_old = np.asarray(kl_run_old, dtype=float)
    length = kl_run_old.size
    series = {
        "logp_run": _per_token(-0.1, length).tolist(),
        "logp_old": _per_token(-1.0 if logp_old is None else logp_old, length).tolist(),
        "logp_new": _per_token(-1.0 if logp_new is None else logp_new, length).tolist(),
        "kl_run_new": _per_token(1.0 if kl_run_new is None else kl_run_new, length).tolist(),
        "kl_run_old": kl_run_old.tolist(),
        "kl_old_new": _per_token(1.0, length).tolist(),
        "entropy_run": _per_token(1.0, length).tolist(),
    }
    if track_attention:
        masses = [0.3 if mass is None else mass for mass in (injected_mass, original_mass)]
        series["attention"] = attention_segments(
            *(mass if np.ndim(mass) == 2 else _per_token(mass, length) for mass in masses),
            n_layers=n_layers, length=length)
    if track_hidden:
        cosines = np.asarray(0.5 if hidden_cos_new is None else hidden_cos_new, dtype=float)
        if cosines.ndim < 2:
            cosines = np.broadcast_to(_per_token(cosines, length)[:, None], (length, n_layers))
        series["hidden_cos_new"] = cosines.tolist()
        series["hidden_cos_old"] = (1.0 - np.asarray(cosines)).tolist()
    return series


def _condition(prompt: str, ids: list[int], stop_reason: str = "max_new_tokens") -> dict:
    return schema.condition(prompt, ids, " ".join(map(str, ids)), stop_reason)


def _injection_condition(point: int, series: dict | None, noise: bool, stop_reason: str,
                         track_attention: bool, track_hidden: bool) -> dict:
    pre_ids = list(range(100, 100 + point))
    kind = "random" if noise else None
    if series is None:   # the baseline stopped before N tokens
        run = _condition("original", pre_ids[:2], "eos")
        return schema.injection_condition(
            run, point, [], "", pre_ids[:2], [], schema.empty_series(track_attention, track_hidden),
            not_injected_reason=f"baseline stopped after 2 tokens (eos) before N={point}",
            noise_kind=kind)
    post_ids = list(range(200, 200 + len(series["kl_run_old"])))
    run = _condition("original", pre_ids + post_ids, stop_reason)
    return schema.injection_condition(run, point, [7, 8, 9], "7 8 9", pre_ids, post_ids, series,
                                      noise_kind=kind)


def build_trace(runs: dict, *, doc_id: str = "doc-0", control: bool = False,
                injection_points=None, track_attention: bool = True,
                track_hidden: bool = True, stop_reasons=("max_new_tokens", "max_new_tokens")) -> dict:
    """A schema-v1 trace built with kvinject.trace_schema's builders and validated by it.

    runs: {N: (injection series, noise series)} from run_series; (None, None) for an injection
    point the baseline never reached (injected: false). control: the alternative prompt equals
    the original (an identical-problem control). injection_points default to the keys of runs.
    stop_reasons: (injection, noise) stop_reason of every point, or {N: (injection, noise)}.
    """
    alternative = ORIGINAL_IDS if control else ALTERNATIVE_IDS
    conditions = {"baseline": _condition("original", list(range(100, 120))),
                  "oracle": _condition("alternative", list(range(300, 320)))}
    for point, (injection, noise) in runs.items():
        reasons = stop_reasons[point] if isinstance(stop_reasons, dict) else stop_reasons
        for name, series, reason in (("injection", injection, reasons[0]), ("noise", noise, reasons[1])):
            conditions[f"{name}@{point}"] = _injection_condition(
                point, series, name == "noise", reason, track_attention, track_hidden)
    settings = {"injection_points": list(injection_points or runs), "strategy": "append",
                "noise": "random", "track_attention": track_attention,
                "track_hidden": track_hidden, "seed": 1234, "max_new_tokens": 64,
                "stop_sequences": ["\n\n"]}
    prompts = {"original": {"text": "original", "ids": list(ORIGINAL_IDS)},
               "alternative": {"text": "original" if control else "alternative",
                               "ids": list(alternative)}}
    trace = schema.build_trace(doc_id, settings, prompts, conditions)
    trace = json.loads(json.dumps(trace))   # exactly what a JSON round trip of the engine gives
    schema.validate_trace(trace)
    return trace


def build_answers(points, *, baseline_old=True, oracle_new=True, injection=(True, False),
                  noise=(False, True)) -> dict:
    """answers as the task's matcher gives them; injection / noise: ("new", "old") matches, the
    same for every point or a {N: (new, old)} mapping."""
    def entry(new, old):
        return {"answer": "42", "new": new, "old": old}

    answers = {"baseline": entry(False, baseline_old), "oracle": entry(oracle_new, False)}
    for point in points:
        for name, matches in (("injection", injection), ("noise", noise)):
            new, old = matches[point] if isinstance(matches, dict) else matches
            answers[f"{name}@{point}"] = entry(new, old)
    return answers


def test_built_trace_follows_schema_v1():
    trace = build_trace({5: (run_series([0.1, 0.2]), run_series([0.3, 0.4])), 10: (None, None)})
    assert trace["schema_version"] == 1
    assert set(trace["conditions"]) == {"baseline", "oracle", "injection@5", "noise@5",
                                        "injection@10", "noise@10"}
    run = trace["conditions"]["injection@5"]
    assert run["ids"] == run["pre_ids"] + run["post_ids"] and len(run["pre_ids"]) == 5
    assert len(run["series"]["attention"]["injected"]) == len(run["post_ids"])
    for token in range(2):
        for layer in range(2):
            total = sum(run["series"]["attention"][s][token][layer] for s in SEGMENTS)
            assert abs(total - 1.0) < 1e-12
    assert trace["conditions"]["noise@10"]["injected"] is False
    assert trace["conditions"]["noise@5"]["noise_kind"] == "random"
    schema.validate_trace(trace)


def test_built_traces_without_tracking_or_injection_validate():
    for attention, hidden in ((False, False), (True, False), (False, True)):
        trace = build_trace({5: (None, None), 3: (run_series([0.1], track_attention=attention,
                                                             track_hidden=hidden),) * 2},
                            track_attention=attention, track_hidden=hidden,
                            stop_reasons={5: ("eos", "eos"), 3: ("eos", "stop_sequence")})
        schema.validate_trace(trace)
        assert trace["conditions"]["injection@5"]["series"]["kl_run_old"] == []
