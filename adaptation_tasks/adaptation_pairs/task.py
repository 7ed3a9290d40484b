"""``class:`` for a user's pairs task: the built-in adaptation_pairs.yaml supplies every key the user's
YAML leaves out, so a task over your own file is four lines (see adaptation_tasks/README.md)::

    task: my_pairs
    class: !function kvinject.adaptation_tasks.adaptation_pairs.task.PairsTask
    metadata:
      dataset_path: my_pairs.jsonl
"""
from __future__ import annotations

from pathlib import Path

from kvinject.adaptation_tasks.task import AdaptationTask

DEFAULTS_YAML = Path(__file__).resolve().parent / "adaptation_pairs.yaml"


class PairsTask(AdaptationTask):
    def __init__(self, config: dict | None = None, **kwargs):
        from kvinject.lm_eval_internals import load_yaml

        defaults = load_yaml()(DEFAULTS_YAML, resolve_func=True, recursive=True)
        config = dict(config or {})
        metadata = {**defaults.get("metadata", {}), **(config.get("metadata") or {})}
        super().__init__(config={**defaults, **config, "metadata": metadata}, **kwargs)
