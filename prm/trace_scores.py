"""Score every condition's text in a set of traces with a PRM judge (DEPRECATED scorer).

What the judge sees: the baseline's steps under the original prompt; every other condition's
(oracle, injection@N, noise@N) under the alternative prompt, the problem the run should end up
solving. An injection run's text is its whole output (the N tokens before the update and what
followed), as in the trace. ``judge`` is anything with ``step_prompts(problem, steps)`` and
``score(prompts, progress)`` (model_adapters.prm_judge.PRMJudge), so this module stays torch-free.
"""
from __future__ import annotations

from collections import defaultdict

from kvinject.prm.aggregate import step_summary
from kvinject.prm.steps import split_steps


def _problem_text(trace: dict, condition: str) -> str:
    return trace["prompts"]["original" if condition == "baseline" else "alternative"]["text"]


def judge_prompts(records: list[dict], judge) -> list[tuple[str, str, str, str, str]]:
    """(task, doc id, condition, step, judge prompt) for every step of every condition."""
    items = []
    for record in records:
        trace = record["trace"]
        for condition, entry in trace["conditions"].items():
            steps = split_steps(entry["text"])
            for step, prompt in zip(steps, judge.step_prompts(_problem_text(trace, condition), steps)):
                items.append((record["task"], str(trace["doc_id"]), condition, step, prompt))
    return items


def score_records(records: list[dict], judge, progress=None) -> dict:
    """task -> doc id -> condition -> {"steps", "scores", "mean", "min", "n_steps"} (no steps: mean/min None)."""
    items = judge_prompts(records, judge)
    scores = judge.score([item[-1] for item in items], progress) if items else []
    result: dict = defaultdict(lambda: defaultdict(dict))
    for record in records:  # conditions with no steps still appear
        trace = record["trace"]
        for condition in trace["conditions"]:
            result[record["task"]][str(trace["doc_id"])][condition] = {"steps": [], "scores": []}
    for (task, doc_id, condition, step, _), score in zip(items, scores):
        entry = result[task][doc_id][condition]
        entry["steps"].append(step)
        entry["scores"].append(float(score))
    for docs in result.values():
        for conditions in docs.values():
            for entry in conditions.values():
                entry.update(step_summary(entry["scores"]) or {"mean": None, "min": None, "n_steps": 0})
    return {task: {doc: dict(c) for doc, c in docs.items()} for task, docs in result.items()}
