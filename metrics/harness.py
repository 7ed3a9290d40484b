"""The two points where the metrics meet lm-eval. lm_eval is imported lazily, only here, so that
`kvinject.metrics` imports (and its tests run) without lm_eval or torch."""

from __future__ import annotations

AGGREGATION_PREFIX = "kvinject_"


def _plain_mean(values) -> float:
    return sum(values) / len(values)


def lm_eval_mean():
    """lm-eval's registered `mean` aggregation when lm_eval is installed, else the same formula.

    It must be lm-eval's own function object: lm-eval computes a standard error only for
    aggregations it recognises by identity (`stderr_for_metric`).
    """
    try:
        from lm_eval.api.metrics import mean
    except ImportError:
        return _plain_mean
    return mean


def _computed_by_the_task(references=None, predictions=None, **kwargs):
    raise RuntimeError(
        "kvinject adaptation metrics are computed from the engine trace by the adaptation task's "
        "process_results (kvinject.metrics.doc_metrics), not by a per-response metric function"
    )


def register_with_lm_eval(injection_points=(5, 10, 15), settings=None, n_layers: int = 0) -> None:
    """Register every result key as an lm-eval metric with its aggregation and direction.

    Each key K gets the aggregation `kvinject_K` (built with `settings`, default settings if None)
    and a metric `K` whose higher_is_better is `metric_higher_is_better(K)`, so a task YAML's
    metric_list can name them. Idempotent: names already registered are left as they are (the
    first registration's settings win; a task with its own settings should call
    `metric_aggregation(key, settings)` itself).
    """
    # Importing lm_eval.api.metrics first registers lm-eval's built-ins: registering into the
    # empty registry would stop lm-eval from ever loading them (it only does so when empty).
    import lm_eval.api.metrics  # noqa: F401
    from lm_eval.api import registry

    from .aggregations import metric_aggregation
    from .keys import metric_higher_is_better, result_keys
    from .settings import AdaptationSettings

    settings = settings or AdaptationSettings()
    for key in result_keys(injection_points, settings, n_layers):
        aggregation = AGGREGATION_PREFIX + key
        if aggregation not in registry.aggregation_registry:
            registry.register_aggregation(aggregation)(metric_aggregation(key, settings))
        if key not in registry.metric_registry:
            registry.register_metric(
                metric=key, higher_is_better=metric_higher_is_better(key),
                aggregation=aggregation,
            )(_computed_by_the_task)
