"""The documented, configurable thresholds of every adaptation metric.

A task reads them from its YAML (`metadata: {adaptation: {...}}`, overridable with lm-eval's
`--metadata`) and passes them to `doc_metrics` and `metric_aggregation`, so no threshold is a
constant buried in the metric code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kvinject.settings_mapping import from_mapping
from kvinject.trace_schema import PRECISION_KEYS

# The smallest KL gap (KL(run||old) - KL(run||new), nats) a precision resolves, by (dtype the model
# decoded in, dtype the series were scored in): at least twice the largest error of the gap against a
# float32 run of the same weights over the same tokens (SmolLM2-135M, 3 changed docs x 2 points x 2
# runs, 24 tokens; metrics/README.md "Precision"). The adapted rule's minimum gap is at least this.
# The engine scores in the model's dtype (its one decoding loop); the float32-scored entries are
# for traces of the earlier engine, which scored 16-bit models in a separate float32 pass.
KL_GAP_RESOLUTION = {
    ("float32", "float32"): 0.0,
    ("bfloat16", "float32"): 0.25,   # measured max 0.12 nats (earlier engine)
    ("bfloat16", "bfloat16"): 0.55,  # measured max 0.26 (one loop; the earlier engine's bf16 scoring: 0.16)
    ("float16", "float32"): 0.02,    # measured max 0.0095 (earlier engine)
    ("float16", "float16"): 0.08,    # measured max 0.0375 (one loop; earlier engine: 0.032)
}


def min_kl_gap(settings: "AdaptationSettings", trace_settings: Mapping) -> float:
    """The adapted rule's minimum KL gap for one trace: the setting, or the trace's precision's
    resolution when that is larger (traces without precision settings are float32)."""
    precision = tuple(trace_settings.get(key, "float32") for key in PRECISION_KEYS)
    return max(settings.adapted_min_kl_gap, KL_GAP_RESOLUTION[precision])


DETECTION_STATISTICS = ("kl_run_old", "log_ratio")
CORRECTIONS = ("holm", "bh", "by")
REPORTS = ("headline", "full")


@dataclasses.dataclass(frozen=True)
class AdaptationSettings:
    """Thresholds and resampling sizes for the adaptation metrics (units in brackets).

    adapted_threshold: a run counts as adapted at token t when a_t > this [score, (0, 1)] and
        KL(run||old) - KL(run||new) > adapted_min_kl_gap. The default 0.8 (the run at least four
        times closer, in KL, to the new context than to the old) is set by the noise runs: once
        any text is injected a run departs from both contexts, and which one it is nearer is a
        coin flip per token, so with 0.5 almost every noise run "adapts" within H (98% of
        SmolLM2-135M's on adaptation_semantic, metrics/README.md); with 0.8 4% do.
    adapted_min_kl_gap: the minimum effect: a token whose run is closer to the new context than
        to the old by at most this many nats is not adapted, so fp32-level differences (1e-7)
        never count [nats, >= 0]. A trace decoded or scored in 16-bit raises it to its
        precision's resolution (KL_GAP_RESOLUTION), below which rounding decides.
    horizon_tokens: H, the fixed horizon of the time-to-event shares, of the KL means and of the
        detector (the first H post-injection tokens), so that tasks with different token budgets
        are comparable [tokens, >= 1].
    window_tokens: W, the final post-injection tokens averaged by the "final" metrics
        (oracle_convergence, final_log_ratio, final_attention_ratio, embedding_similarity);
        a run with fewer than W tokens uses all of them [tokens, >= 1].
    stabilization_tokens: k; "stabilized at t" means the criterion holds for tokens t..t+k-1.
        None: it must hold from t to the end of the run [tokens, >= 1 or None].
    attention_ratio_threshold: attention stabilization criterion, injected / original-prompt
        mass > this [ratio, > 0].
    false_alarm_rate: alpha; the detector's threshold is the ceil((n+1)(1-alpha))-th smallest of
        the n noise@N runs' CUSUM peaks (conformal), so a fresh null run alarms with probability
        <= alpha; with fewer than 1/alpha - 1 noise runs no threshold supports alpha and the
        detection is flagged uncalibrated [probability, (0, 1)].
    detection_statistic: the per-token series the CUSUM accumulates: "kl_run_old" (the run's
        divergence from the old context, nats) or "log_ratio" (log p_new - log p_old of the
        run's token, nats; Page's CUSUM of log-likelihood ratios).
    cusum_drift: subtracted from every increment so that a steady level below it never
        accumulates [nats, >= 0]; None: the mean of the statistic over the noise@N tokens of the
        horizon (re-estimated in every bootstrap resample). The alarm comes about
        threshold / (shift - drift) tokens after a change, so latency includes that delay.
    bootstrap_resamples: problem-level bootstrap resamples for the confidence intervals [>= 1].
    confidence_level: of the bootstrap intervals [(0, 1)].
    permutation_resamples: sign-flip resamples of the paired permutation tests; the test is
        exact when 2**n_docs is at most this [>= 1]. A randomised p-value is at least
        1 / (resamples + 1), so with m tests in the family Holm can only reach p < alpha when
        resamples > m / alpha (the default suffices for 3 injection points x 7 metrics).
    correction: multiplicity correction across the family metrics x injection points:
        "holm" (family-wise error), "bh" (Benjamini-Hochberg FDR) or "by" (Benjamini-Yekutieli).
    per_layer: also report attention and embedding metrics per layer (keys `..._layer<l>@N`,
        off by default: the table would grow by layers x metrics x points; the trace keeps them;
        layers numbered from 1).
    confidence_intervals: also report `<metric>_ci_low@N` / `<metric>_ci_high@N` (full report).
    report: "headline" (default): the lm-eval table shows the headline keys only (keys.HEADLINE,
        at most ~30 rows per task); "full": every key (intervals, censored counts, medians,
        p-values, per-layer values), also written to the results JSON and --log_samples.
    seed: seeds the bootstrap and permutation resampling, so aggregates are reproducible.
    """

    adapted_threshold: float = 0.8
    adapted_min_kl_gap: float = 0.01
    horizon_tokens: int = 32
    window_tokens: int = 10
    stabilization_tokens: int | None = None
    attention_ratio_threshold: float = 1.0
    false_alarm_rate: float = 0.05
    detection_statistic: str = "kl_run_old"
    cusum_drift: float | None = None
    bootstrap_resamples: int = 2000
    confidence_level: float = 0.95
    permutation_resamples: int = 9999
    correction: str = "holm"
    per_layer: bool = False
    confidence_intervals: bool = True
    report: str = "headline"
    seed: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_field(field.name, getattr(self, field.name))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> "AdaptationSettings":
        """Settings from a mapping such as the task metadata; None or {} gives the defaults.

        Raises ValueError for an unknown key (listing the valid ones) and TypeError/ValueError
        naming the key for a value of the wrong type or out of range.
        """
        return from_mapping(cls, mapping, "adaptation setting")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _require(ok: bool, name: str, value: Any, expected: str, error: type = ValueError) -> None:
    if not ok:
        raise error(f"adaptation setting {name!r} must be {expected}, got {value!r}")


def _check_field(name: str, value: Any) -> None:
    # Type first (TypeError), then range (ValueError), so a YAML string "0.5" is reported as a
    # type problem rather than silently coerced.
    open_unit = "a number in (0, 1)"
    checks = {
        "adapted_threshold": (_is_number, lambda v: 0 < v < 1, open_unit),
        "adapted_min_kl_gap": (_is_number, lambda v: v >= 0, "a number >= 0"),
        "horizon_tokens": (_is_int, lambda v: v >= 1, "an integer >= 1"),
        "window_tokens": (_is_int, lambda v: v >= 1, "an integer >= 1"),
        "stabilization_tokens": (
            lambda v: v is None or _is_int(v), lambda v: v is None or v >= 1,
            "an integer >= 1 or null",
        ),
        "attention_ratio_threshold": (_is_number, lambda v: v > 0, "a number > 0"),
        "false_alarm_rate": (_is_number, lambda v: 0 < v < 1, open_unit),
        "detection_statistic": (
            lambda v: isinstance(v, str), lambda v: v in DETECTION_STATISTICS,
            f"one of {DETECTION_STATISTICS}",
        ),
        "cusum_drift": (
            lambda v: v is None or _is_number(v), lambda v: v is None or v >= 0,
            "a number >= 0 or null",
        ),
        "bootstrap_resamples": (_is_int, lambda v: v >= 1, "an integer >= 1"),
        "confidence_level": (_is_number, lambda v: 0 < v < 1, open_unit),
        "permutation_resamples": (_is_int, lambda v: v >= 1, "an integer >= 1"),
        "correction": (
            lambda v: isinstance(v, str), lambda v: v in CORRECTIONS, f"one of {CORRECTIONS}"
        ),
        "per_layer": (lambda v: isinstance(v, bool), lambda v: True, "true or false"),
        "confidence_intervals": (lambda v: isinstance(v, bool), lambda v: True, "true or false"),
        "report": (lambda v: isinstance(v, str), lambda v: v in REPORTS, f"one of {REPORTS}"),
        "seed": (_is_int, lambda v: v >= 0, "an integer >= 0"),
    }
    type_ok, range_ok, expected = checks[name]
    _require(type_ok(value), name, value, expected, TypeError)
    _require(range_ok(value), name, value, expected)
