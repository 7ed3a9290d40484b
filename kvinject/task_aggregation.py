"""Wrapped around lm-eval's per-task aggregation (``evaluator_utils._compute_task_aggregations``) by
the start-up hook (kvinject/_autoload.py), for kvinject's adaptation tasks only:

- lm-eval warns "Metrics were not scored on the same number of documents" whenever a task's keys
  have different counts. For the adaptation tasks that is by design (accuracies cover changed
  docs, the @N keys the docs injected at N, the detection keys the controls too), and the long
  warning reads as a fault: it is replaced by one line that says why and names the counts.
- a p-value key with fewer than two pairs has no test (kvinject.metrics.values.NO_TEST): it is
  left out of the results, with its standard error entry.
Every other task goes through lm-eval unchanged, its warning included.
"""
from __future__ import annotations

import contextlib
import functools
import logging

from kvinject.metrics.values import NoTest

LM_EVAL_WARNING = "Metrics were not scored on the same number of documents"
COUNT_NOTICE = ("[{task}] kvinject measures cover different documents by design (accuracies: changed "
                "docs; @N keys: docs injected at N; detection keys: controls too): each key's count is "
                "n_docs@N (changed docs) and n_controls@N (controls) in the results.")


def is_adaptation_task(task) -> bool:
    """Whether ``task`` is one of kvinject's adaptation tasks (an AdaptationTask)."""
    from kvinject.adaptation_tasks.task import AdaptationTask

    return isinstance(task, AdaptationTask)


class _DropCountWarning(logging.Filter):
    def __init__(self, task_name: str):
        super().__init__()
        self.prefix = f"[{task_name}] {LM_EVAL_WARNING}"

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _without_count_warning(logger: logging.Logger, task_name: str):
    dropped = _DropCountWarning(task_name)
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


def _without_untested_keys(agg_metrics: dict) -> dict:
    kept = dict(agg_metrics)
    for key, value in agg_metrics.items():
        if isinstance(value, NoTest):
            metric, _, filter_key = key.partition(",")
            kept.pop(key)
            kept.pop(f"{metric}_stderr,{filter_key}", None)
    return kept


def adaptation_task_aggregations(compute_task_aggregations, logger: logging.Logger):
    """compute(task, raw_metrics, ...) -> (agg_metrics, sample_len), with the changes above for
    adaptation tasks; `logger` is the one lm-eval warns on."""

    @functools.wraps(compute_task_aggregations)
    def compute(task, raw_metrics, *args, **kwargs):
        if not is_adaptation_task(task):
            return compute_task_aggregations(task, raw_metrics, *args, **kwargs)
        with _without_count_warning(logger, task.task_name):
            agg_metrics, sample_len = compute_task_aggregations(task, raw_metrics, *args, **kwargs)
        if len({len(items) for items in raw_metrics.values()}) > 1:
            logger.info(COUNT_NOTICE.format(task=task.task_name))
        return _without_untested_keys(agg_metrics), sample_len

    return compute
