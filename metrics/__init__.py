"""Adaptation metrics: pure numpy/scipy functions over the engine's per-doc traces.

Public API (docs/architecture.md section 5):
    AdaptationSettings                 validated, documented thresholds (settings.py)
    doc_metrics(trace, answers, settings) -> {key: per-doc value}      (per_doc.py)
    metric_aggregation(key, settings) -> callable(per-doc values) -> float  (aggregations.py)
    metric_higher_is_better(key) -> bool                                (keys.py)
    register_with_lm_eval()            registers aggregations and metric names (harness.py)
    result_keys(injection_points, settings, n_layers)  every key doc_metrics can emit
Result keys, units, directions and conventions: keys.METRICS and metrics/README.md.
"""

from .aggregations import metric_aggregation
from .harness import register_with_lm_eval
from .keys import METRICS, metric_higher_is_better, result_keys
from .per_doc import doc_metrics
from .settings import AdaptationSettings

__all__ = [
    "METRICS",
    "AdaptationSettings",
    "doc_metrics",
    "metric_aggregation",
    "metric_higher_is_better",
    "register_with_lm_eval",
    "result_keys",
]
