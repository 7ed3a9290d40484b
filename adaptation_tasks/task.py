"""The lm-eval Task shared by the adaptation tasks: score every condition of a kvinject trace.

YAMLs select it with `class: !function kvinject.adaptation_tasks.task.AdaptationTask`; each YAML names its
answer matcher in `metadata.answer_matcher` ("module.function", called as matcher(text, doc)), and its
metric settings in `metadata.adaptation` (see kvinject.metrics.AdaptationSettings).
"""
from __future__ import annotations

import hashlib
import importlib
import json
from functools import cached_property
from typing import Any, Callable

from lm_eval.api.task import ConfigurableTask

from kvinject import metrics as adaptation_metrics
from kvinject.lm_eval_internals import set_metric_tables


class ResolvingDict(dict):
    """A dict that computes a missing key on first use and keeps it.

    lm-eval reads `aggregation()[key]` and `higher_is_better().get(key)` for whatever keys
    process_results returned; ours depend on the injection points, so they cannot be listed up front.
    """

    def __init__(self, resolve: Callable[[str], Any]):
        super().__init__()
        self._resolve = resolve

    def __missing__(self, key: str) -> Any:
        value = self[key] = self._resolve(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except (KeyError, ValueError):
            return default


class AdaptationTask(ConfigurableTask):
    """An lm-eval task whose docs follow the doc contract and whose model output carries a kvinject trace.

    ``process_results`` matches the answer of every condition with the YAML's ``metadata.answer_matcher``
    and turns the trace into per-doc metrics (``metadata.adaptation`` settings); each key's aggregation
    and direction are resolved on first use. The task config records where the docs came from
    (``dataset_record``).
    """

    def __init__(self, config: dict | None = None, **kwargs):
        # lm-eval's factory passes the whole YAML, including the `class` key TaskConfig does not accept
        config = {key: value for key, value in (config or {}).items() if key != "class"}
        super().__init__(config=config, **kwargs)
        set_metric_tables(
            self,
            aggregation=ResolvingDict(lambda key: adaptation_metrics.metric_aggregation(key, self.adaptation_settings)),
            higher_is_better=ResolvingDict(adaptation_metrics.metric_higher_is_better),
        )
        self.adaptation_settings  # validate --metadata settings now, before any generation  # noqa: B018
        # lm-eval writes the task config, metadata included, into the results JSON
        self.config.metadata = {**self._metadata, "dataset": self.dataset_record}

    @cached_property
    def dataset_record(self) -> dict:
        """Where the docs came from (the loader module's ``dataset_source(metadata)`` where it has one,
        else the metadata's ``dataset_path`` or the loader's name) and a sha256 of the docs as built."""
        loader = self.config.custom_dataset
        describe = getattr(importlib.import_module(loader.__module__), "dataset_source", None) if loader else None
        if describe is not None:
            source = describe(self._metadata)
        else:
            source = self._metadata.get("dataset_path") or self.config.dataset_path or (
                f"{loader.__module__}.{loader.__qualname__}" if loader else None)
        docs = json.dumps(list(self.eval_docs), sort_keys=True, ensure_ascii=False, default=str)
        return {"source": str(source), "sha256": hashlib.sha256(docs.encode("utf-8")).hexdigest()}

    @cached_property
    def adaptation_settings(self):
        return adaptation_metrics.AdaptationSettings.from_mapping(self._metadata.get("adaptation"))

    @cached_property
    def answer_matcher(self) -> Callable[[str, dict], dict]:
        path = self._metadata.get("answer_matcher")
        if not isinstance(path, str) or "." not in path:
            raise ValueError(
                f"task {self.config.task!r}: metadata.answer_matcher must name a function as 'module.function', "
                f"got {path!r}"
            )
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def override_metric(self, metric_name: str) -> None:
        # --predict_only swaps in lm-eval's "bypass" metric: outputs and traces are kept, nothing is scored
        super().override_metric(metric_name)
        self._only_metric = metric_name

    @property
    def _metadata(self) -> dict:
        return self.config.metadata or {}

    def process_results(self, doc: dict, results: list) -> dict:
        trace = getattr(results[0], "trace", None)
        if trace is None:
            raise TypeError(
                f"task {self.config.task!r}, doc {doc.get('id')!r}: the model returned no trace. "
                "The adaptation tasks need the kvinject model: run lm_eval with --model kvinject."
            )
        if getattr(self, "_only_metric", None):
            return {self._only_metric: None}
        answers = {
            condition: self.answer_matcher(output["text"], doc) for condition, output in trace["conditions"].items()
        }
        metrics = adaptation_metrics.doc_metrics(trace, answers, self.adaptation_settings)
        for key in metrics:  # resolve now, so the results JSON lists every metric's direction
            self.higher_is_better()[key]
        return metrics
