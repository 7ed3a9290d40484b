"""Per-step PRM scores -> per-doc and per-condition summaries (DEPRECATED scorer; pure, torch-free).

Per doc and condition: ``mean`` and ``min`` over the condition's steps (scores in [-1, 1]).
Per condition: the mean over docs of each, with a bootstrap interval over docs (docs are the
independent units; kvinject.metrics.resampling.bootstrap_mean_interval, BCa then percentile).
Docs where a condition has no steps (empty text) are left out of that condition's summary.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from kvinject.metrics.resampling import bootstrap_mean_interval


def step_summary(scores: Sequence[float]) -> dict | None:
    """Mean and min of one condition's step scores and their count (``n_steps``); None when it has no steps."""
    if len(scores) == 0:
        return None
    return {"mean": float(np.mean(scores)), "min": float(np.min(scores)), "n_steps": len(scores)}


def condition_order(conditions) -> list[str]:
    """baseline, oracle, then injection@N and noise@N side by side in increasing N."""
    def key(name):
        match = re.fullmatch(r"(injection|noise)@(\d+)", name)
        if match:
            return (1, int(match.group(2)), match.group(1) == "noise")
        return (0, {"baseline": 0, "oracle": 1}.get(name, 2), False)

    return sorted(conditions, key=key)


def condition_summaries(per_doc: Mapping[str, Mapping[str, dict | None]], resamples: int = 1000,
                        confidence_level: float = 0.95, seed: int = 0) -> list[dict]:
    """``per_doc``: doc id -> condition -> step_summary (None or mean None: no steps). One row per condition."""
    conditions = condition_order({c for doc in per_doc.values() for c in doc})
    rows = []
    for name in conditions:
        summaries = [doc[name] for doc in per_doc.values() if doc.get(name) and doc[name].get("mean") is not None]
        row = {"condition": name, "docs": len(summaries)}
        for stat in ("mean", "min"):
            values = [s[stat] for s in summaries]
            row[stat] = float(np.mean(values)) if values else None
            row[f"{stat}_interval"] = list(bootstrap_mean_interval(values, resamples, confidence_level, seed)) if values else None
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A markdown table: condition, docs, mean step score [interval], min step score [interval]."""
    def cell(row, stat):
        if row[stat] is None:
            return "–"
        low, high = row[f"{stat}_interval"]
        return f"{row[stat]:+.3f} [{low:+.3f}, {high:+.3f}]"

    lines = ["| condition | docs | PRM mean step | PRM min step |", "|---|---|---|---|"]
    lines += [f"| {r['condition']} | {r['docs']} | {cell(r, 'mean')} | {cell(r, 'min')} |" for r in rows]
    return "\n".join(lines)


def discrimination_auc(correct: Sequence[float], wrong: Sequence[float]) -> float:
    """P(score of a correct step > score of a wrong one), ties counting one half (the ROC AUC;
    0.5 is chance, 1 perfect)."""
    a, b = np.asarray(correct, dtype=float)[:, None], np.asarray(wrong, dtype=float)[None, :]
    if a.size == 0 or b.size == 0:
        raise ValueError("discrimination needs at least one correct and one wrong step")
    return float(np.mean((a > b) + 0.5 * (a == b)))
