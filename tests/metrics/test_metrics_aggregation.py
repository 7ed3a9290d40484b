"""Key grammar and directions, cross-doc aggregations, p-value families, lm-eval integration."""

import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import build_answers, build_trace, run_series

from kvinject.metrics import (
    AdaptationSettings,
    aggregations,
    doc_metrics,
    metric_aggregation,
    metric_higher_is_better,
    result_keys,
)

# The smallest randomised p-value is about 2 / (resamples + 1) (two-sided): with the 28 tests of
# the realistic run (14 paired metrics x 2 points), Holm needs > 1100 for 0.05.
# Runs of the fixtures below are 12 tokens long, so H = 12: a horizon past the budget would make
# the shares not estimable (test_a_budget_below_the_horizon_makes_the_share_not_estimable).
FAST = AdaptationSettings(window_tokens=3, bootstrap_resamples=60, permutation_resamples=1999,
                          report="full", horizon_tokens=12)


@pytest.mark.parametrize("key, higher", [
    ("baseline_accuracy", True), ("injection_accuracy@5", True), ("stuck_rate@10", False),
    ("adaptation_gap@5", False), ("oracle_convergence@137", True),
    ("adaptation_point_share@5", True), ("adaptation_point_median@5", False),
    ("adaptation_point_censored@5", False), ("adaptation_point_never@5", False),
    ("detection_latency_median@15", False), ("kl_run_new@5", False), ("kl_run_old@5", True),
    ("n_docs@5", True), ("detection_calibrated@5", True), ("embedding_contrast_mid@5", True),
    ("detection_rate_ci_high@5", True), ("control_false_positive_rate@5", False),
    ("pvalue_oracle_convergence@5", False), ("attention_original_layer12@5", False),
    ("attention_injected_layer1@5", True), ("embedding_similarity@5", True),
    ("attention_shift@5", True), ("noise_specificity@5", True), ("baseline_accuracy_ci_low", True),
])
def test_direction_comes_from_the_metric(key, higher):
    assert metric_higher_is_better(key) is higher


@pytest.mark.parametrize("key", [
    "adaptation_latency@5", "oracle_convergence", "baseline_accuracy@5", "pvalue_stuck_rate@5",
    "adaptation_score_censored@5", "stuck_rate_layer1@5", "detection_rate_censored@5",
    "adaptation_point@5", "detection_latency@5", "pvalue_adaptation_point_share@5",
    "kl_run_new_share@5", "adaptation_point_share_layer1@5",
    "pvalue_oracle_convergence_ci_low@5", "oracle_convergence@five", "attention_injected_layer0@5",
])
def test_invalid_keys_are_rejected_with_the_key_named(key):
    with pytest.raises(ValueError, match="key"):
        metric_aggregation(key, FAST)


def test_every_catalogued_key_has_an_aggregation_and_a_direction():
    for key in result_keys([5, 10, 15], FAST, n_layers=3):
        assert callable(metric_aggregation(key, FAST))
        assert isinstance(metric_higher_is_better(key), bool)


def test_mean_keys_use_lm_evals_own_mean_so_it_reports_a_standard_error():
    from lm_eval.api.metrics import mean

    assert metric_aggregation("oracle_convergence@5", FAST) is mean
    assert metric_aggregation("embedding_similarity_layer3@10", FAST) is mean
    assert metric_aggregation("oracle_convergence_ci_low@5", FAST) is not mean


def _doc(index, rng, *, adapt_at=None, control=False, length=12, points=(5, 10)):
    """A doc whose injection run adapts (a_t jumps to ~0.9) at `adapt_at`; the noise run and the
    injection run before it stay near the old context. Not injected at N=10 for odd docs."""
    def run(adapts_at):
        old = rng.uniform(0.05, 0.2, size=length)   # a_t <= 0.17 before, >= 0.83 after
        new = rng.uniform(1.0, 3.0, size=length)
        if adapts_at is not None:
            old[adapts_at - 1:], new[adapts_at - 1:] = (new[adapts_at - 1:].copy(),
                                                         old[adapts_at - 1:].copy())
        adapted = np.arange(length) >= (adapts_at or length + 1) - 1
        return run_series(old, new, logp_new=np.where(adapted, -0.5, -2.0),
                          injected_mass=np.where(adapted, 0.6, 0.2), original_mass=0.3,
                          hidden_cos_new=np.where(adapted, 0.9, 0.4))

    runs = {point: (run(adapt_at), run(None)) for point in points}
    if index % 2:
        runs[10] = (None, None)
    trace = build_trace(runs, doc_id=f"doc-{index}", control=control)
    answers = build_answers(points, injection=(adapt_at is not None, adapt_at is None))
    return doc_metrics(trace, answers, FAST)


def _aggregate_all(docs, settings=FAST):
    keys = {key for doc in docs for key in doc}
    return {key: metric_aggregation(key, settings)([doc[key] for doc in docs if key in doc])
            for key in keys}


@pytest.fixture(scope="module")
def realistic():
    rng = np.random.default_rng(0)
    docs = [_doc(i, rng, adapt_at=3 + i % 3) for i in range(24)]
    docs += [_doc(100 + i, rng, adapt_at=None) for i in range(6)]   # never adapt: censored
    docs += [_doc(200 + i, rng, control=True) for i in range(6)]
    return docs, _aggregate_all(docs)


def test_a_realistic_run_reports_every_metric_without_nan(realistic):
    _, results = realistic
    assert not any(math.isnan(value) for value in results.values())
    # only a median may be infinite (not reached); here every median is reached
    assert all(isinstance(value, float) and math.isfinite(value) for value in results.values())
    assert set(results) <= set(result_keys([5, 10], FAST, n_layers=2))
    assert "control_false_positive_rate@5" in results and "pvalue_final_log_ratio@10" in results


def test_aggregates_have_the_expected_values(realistic):
    _, results = realistic
    # adaptation at 3, 4, 5 (8 docs each); 6 censored at 12 by the budget
    assert results["adaptation_point_median@5"] == 4.0
    assert results["adaptation_point_censored@5"] == 6.0
    assert results["adaptation_point_never@5"] == 0.0
    assert results["adaptation_point_share@5"] == pytest.approx(24 / 30)
    assert results["adaptation_point_vs_noise@5"] == pytest.approx(24 / 30)
    assert results["stabilization_censored@10"] == 3.0  # half the docs are not injected at 10
    assert results["n_docs@5"] == 30.0 and results["n_docs@10"] == 15.0
    assert results["injection_accuracy@5"] == pytest.approx(24 / 30)
    assert results["stuck_rate@5"] == pytest.approx(6 / 30)
    assert results["baseline_accuracy"] == 1.0
    assert 0.5 < results["detection_rate@5"] <= 1.0
    assert results["detection_calibrated@5"] == 1.0   # 36 noise runs support alpha = 0.05
    assert results["detection_false_alarm_bound@5"] <= 0.05
    for metric in ("adaptation_point_share@5", "oracle_convergence@5", "detection_rate@5",
                   "stabilization_share@10", "control_false_positive_rate@5"):
        name, point = metric.split("@")
        low, high = results[f"{name}_ci_low@{point}"], results[f"{name}_ci_high@{point}"]
        assert low <= results[metric] <= high, metric


def test_clear_effects_are_significant_after_correction(realistic):
    _, results = realistic
    for metric in ("oracle_convergence", "final_log_ratio", "attention_injected",
                   "embedding_similarity", "injection_accuracy"):
        assert results[f"pvalue_{metric}@5"] < 0.05, metric
    pvalues = [value for key, value in results.items() if key.startswith("pvalue_")]
    assert all(0 < p <= 1 for p in pvalues)


def test_the_test_family_is_computed_once_for_all_pvalue_keys(realistic):
    docs, _ = realistic
    settings = AdaptationSettings(permutation_resamples=201, bootstrap_resamples=10)
    aggregations._family_pvalues.cache.clear()
    # every doc is injected at 5 (so carries the same family payload); odd docs are not at 10
    for key in ("pvalue_oracle_convergence@5", "pvalue_final_log_ratio@5",
                "pvalue_embedding_similarity@5"):
        metric_aggregation(key, settings)([doc[key] for doc in docs if key in doc])
    assert len(aggregations._family_pvalues.cache) == 1


def test_holm_is_never_less_conservative_than_bh(realistic):
    docs, _ = realistic
    for key in ("pvalue_adaptation_score@5", "pvalue_final_attention_ratio@10"):
        values = [doc[key] for doc in docs if key in doc]
        holm = metric_aggregation(key, FAST)(values)
        bh = metric_aggregation(key, AdaptationSettings(
            correction="bh", window_tokens=3, permutation_resamples=999))(values)
        assert bh <= holm


def test_no_effect_gives_large_pvalues(build_answers, build_trace, run_series):
    rng = np.random.default_rng(1)
    docs = []
    for index in range(30):
        runs = [run_series(rng.exponential(size=8), rng.exponential(size=8)) for _ in range(2)]
        docs.append(doc_metrics(build_trace({5: tuple(runs)}, doc_id=str(index)),
                                build_answers([5], injection=(False, True)), FAST))
    values = [doc["pvalue_oracle_convergence@5"] for doc in docs]
    assert metric_aggregation("pvalue_oracle_convergence@5", FAST)(values) > 0.2
    # identical answers in both runs: no difference, no evidence
    assert metric_aggregation("pvalue_injection_accuracy@5", FAST)(values) == 1.0


def test_all_runs_censored_or_stopped():
    censored = {"run": {"time": 7, "status": "censored"}, "noise": {"time": 7, "status": "never"}}
    assert metric_aggregation("stabilization_median@5", FAST)([censored] * 4) == math.inf
    assert metric_aggregation("stabilization_median_reached@5", FAST)([censored] * 4) == 0.0
    assert metric_aggregation("stabilization_censored@5", FAST)([censored] * 4) == 4.0
    stopped = {"run": {"time": 7, "status": "never"}, "noise": {"time": 7, "status": "never"}}
    assert metric_aggregation("stabilization_share@5", FAST)([stopped] * 4) == 0.0
    assert metric_aggregation("stabilization_share_ci_low@5", FAST)([stopped] * 4) == 0.0


def test_a_budget_below_the_horizon_makes_the_share_not_estimable():
    """Every run censored at t = 7 < H = 12 and none followed to H: the share within H is not
    estimable (it was reported as 1 - S(7) = 0 under the name "within H"), its interval says
    only what the data can: [0, 1] here. Followed to H, the same share is estimable."""
    censored = {"run": {"time": 7, "status": "censored"}, "noise": {"time": 7, "status": "censored"}}
    share = metric_aggregation("stabilization_share@5", FAST)([censored] * 4)
    assert math.isnan(share) and str(share) == "not estimable"
    assert math.isnan(metric_aggregation("stabilization_vs_noise@5", FAST)([censored] * 4))
    assert metric_aggregation("stabilization_share_ci_low@5", FAST)([censored] * 4) == 0.0
    assert metric_aggregation("stabilization_share_ci_high@5", FAST)([censored] * 4) == 1.0
    followed = {"run": {"time": 12, "status": "censored"}, "noise": {"time": 12, "status": "censored"}}
    assert metric_aggregation("stabilization_share@5", FAST)([censored] * 4 + [followed]) == 0.0


def test_an_accuracy_of_zero_or_one_gets_no_certain_interval():
    """0 of 74 correct: the bootstrap alone gives [0, 0]; the interval contains Clopper-Pearson's
    [0, 1 - 0.025^(1/74)] = [0, 0.049]. Non-binary means keep the bootstrap's."""
    for values, expected in (([0.0] * 74, (0.0, 1 - 0.025 ** (1 / 74))), ([1.0] * 74, (0.025 ** (1 / 74), 1.0))):
        low = metric_aggregation("injection_accuracy_ci_low@5", FAST)(values)
        high = metric_aggregation("injection_accuracy_ci_high@5", FAST)(values)
        assert (low, high) == pytest.approx(expected)
    assert metric_aggregation("oracle_convergence_ci_high@5", FAST)([0.25] * 10) == 0.25


def test_aggregates_are_reproducible():
    values = [0.1, 0.5, 0.2, 0.9, 0.4, 0.3]
    first = metric_aggregation("oracle_convergence_ci_low@5", FAST)(values)
    aggregations._mean_interval.cache.clear()
    assert metric_aggregation("oracle_convergence_ci_low@5", FAST)(values) == first


def test_lm_eval_aggregates_the_per_doc_values_with_standard_errors(realistic):
    from lm_eval.evaluator_utils import _compute_task_aggregations

    docs, expected = realistic

    class Task:
        task_name = "adaptation_synthetic"

        @staticmethod
        def aggregation():
            return {key: metric_aggregation(key, FAST) for key in expected}

    raw = {}
    for doc in docs:
        for key, value in doc.items():
            raw.setdefault((key, "none"), []).append(value)
    results, _ = _compute_task_aggregations(Task(), raw, bootstrap_iters=100)
    assert results["oracle_convergence@5,none"] == pytest.approx(expected["oracle_convergence@5"])
    assert isinstance(results["oracle_convergence@5_stderr,none"], float)
    assert results["adaptation_point_share@5_stderr,none"] == "N/A"
    assert not any(isinstance(value, float) and math.isnan(value) for value in results.values())


def test_nothing_is_registered_in_lm_evals_global_registries():
    script = """
from lm_eval.api import registry
import lm_eval.tasks.manager  # the start-up hook's callback runs here (kvinject/_autoload.py)
print(sorted(k for k in registry.aggregation_registry if 'kvinject' in k or '@' in k))
print(sorted(k for k in registry.metric_registry if '@' in k or 'adaptation' in k))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "[]"]


def test_the_package_imports_and_computes_without_lm_eval_or_torch():
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('lm_eval', 'torch'):
            raise ImportError(name + ' is blocked')
sys.meta_path.insert(0, Block())
sys.path.insert(0, 'tests')
from kvinject.metrics import AdaptationSettings, doc_metrics, metric_aggregation
from kvinject.metrics.values import NoTest
from helpers import build_answers, build_trace, run_series
values = doc_metrics(build_trace({5: (run_series([1, 2]), run_series([1, 1]))}),
                     build_answers([5]), AdaptationSettings(report="full"))
print(metric_aggregation('oracle_convergence@5', None)([values['oracle_convergence@5']] * 2))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=__file__.rsplit("/tests/", 1)[0])
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx((0.5 + 2 / 3) / 2)


def _adaptation_payloads(rng, changed, controls, changed_share, control_share, horizon=32):
    """Per-doc adaptation-point payloads: an event at a uniform t <= horizon with the given
    probability, else (at random) censored by the budget at 12 tokens or never."""
    payloads = []
    for index in range(changed + controls):
        control = index >= changed
        if rng.random() < (control_share if control else changed_share):
            run = {"time": int(rng.integers(1, horizon + 1)), "status": "event"}
        else:
            run = {"time": 12, "status": str(rng.choice(["censored", "never"]))}
        payloads.append({"run": run, "control": control})
    return payloads


def test_adaptation_vs_controls_holds_its_level_and_finds_a_difference():
    """Null: changed and control docs adapt alike (30%, 36 + 12 docs, some censored): over 300
    replications the test rejects at 5% at most 0.05 + 3 standard errors of the time. A real
    difference (60% vs none, as identical contexts give) is found; without controls: NaN."""
    rng = np.random.default_rng(12)
    settings = AdaptationSettings(permutation_resamples=99, report="full")
    aggregate = metric_aggregation("adaptation_point_vs_controls_pvalue@5", settings)
    replications = 300
    pvalues = np.array([aggregate(_adaptation_payloads(rng, 36, 12, 0.3, 0.3))
                        for _ in range(replications)])
    assert np.all((pvalues > 0) & (pvalues <= 1))   # a NaN would pass the level check vacuously
    rejected = np.sum(pvalues <= 0.05)
    assert rejected / replications <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / replications)
    settings = AdaptationSettings(permutation_resamples=999, report="full")
    aggregate = metric_aggregation("adaptation_point_vs_controls_pvalue@5", settings)
    assert aggregate(_adaptation_payloads(rng, 36, 12, 0.6, 0.0)) < 0.01
    assert math.isnan(aggregate(_adaptation_payloads(rng, 36, 0, 0.6, 0.0)))


def test_controls_of_a_realistic_run_never_adapt_and_the_difference_is_significant(realistic):
    docs, results = realistic
    controls = [doc["adaptation_point_vs_controls_pvalue@5"] for doc in docs
                if doc["adaptation_point_vs_controls_pvalue@5"]["control"]]
    assert len(controls) == 6 and all(c["run"]["status"] != "event" for c in controls)
    assert results["adaptation_point_vs_controls_pvalue@5"] < 0.01


def test_kl_noise_floor_is_the_largest_control_gap_and_warns_when_it_reaches_the_minimum_gap(caplog):
    floor = metric_aggregation("kl_noise_floor@5", AdaptationSettings())
    assert math.isnan(floor([]))
    with caplog.at_level("WARNING", logger="kvinject.metrics.aggregations"):
        assert floor([0.0, 1e-6, 3e-6]) == 3e-6
    assert not caplog.records
    with caplog.at_level("WARNING", logger="kvinject.metrics.aggregations"):
        assert floor([0.0, 0.18]) == 0.18  # the bf16 rounding the adapted rule used to count as adaptation
    assert "kl_noise_floor 0.18 nats >= adapted_min_kl_gap 0.01" in caplog.text
    assert not metric_higher_is_better("kl_noise_floor@5")
