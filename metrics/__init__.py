"""Adaptation metrics: pure numpy/scipy functions over the engine's per-doc traces.

Public API (docs/architecture.md section 5):
    AdaptationSettings                 validated, documented thresholds (settings.py)
    doc_metrics(trace, answers, settings) -> {key: per-doc value}      (per_doc.py)
    metric_aggregation(key, settings) -> callable(per-doc values) -> float  (aggregations.py)
    metric_higher_is_better(key) -> bool                                (keys.py)
    result_keys(injection_points, settings, n_layers)  every key doc_metrics can emit
Result keys, units, directions, estimands, nulls and intervals: keys.METRICS and metrics/README.md.
"""

from .aggregations import metric_aggregation
from .keys import HEADLINE, METRICS, metric_higher_is_better, result_keys
from .per_doc import doc_metrics
from .settings import AdaptationSettings

__all__ = [
    "HEADLINE",
    "METRICS",
    "AdaptationSettings",
    "doc_metrics",
    "metric_aggregation",
    "metric_higher_is_better",
    "result_keys",
]
