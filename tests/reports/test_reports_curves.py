"""Adaptation curves: per-token values from the trace, pointwise bootstrap bands, the drawn figure."""
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from matplotlib.image import imread
from report_runs import simple_trace

from kvinject.metrics import AdaptationSettings
from kvinject.reports.curves import CurveKey, mean_band, task_curves
from kvinject.reports.curves import run_series as curve_values
from kvinject.reports.plotting import draw_curves


def test_run_series_follow_the_metric_definitions(make_trace, run_series):
    trace = make_trace({3: (run_series([0.0, 0.3, 0.9], [0.6, 0.1, 0.1], injected_mass=[0.6, 0.5, 0.4],
                                   original_mass=[0.2, 0.3, 0.1]), run_series([0.1] * 3))})
    values = curve_values(trace["conditions"]["injection@3"], AdaptationSettings())
    np.testing.assert_allclose(values["adaptation_score"], [0.0, 0.75, 0.9])
    np.testing.assert_array_equal(values["adapted_share"], [0.0, 0.0, 1.0])   # a_t > 0.8 (default)
    looser = curve_values(trace["conditions"]["injection@3"], AdaptationSettings(adapted_threshold=0.5))
    np.testing.assert_array_equal(looser["adapted_share"], [0.0, 1.0, 1.0])
    # and the KL gap of the metrics' rule: t = 2 is 0.2 nats nearer the new context
    gapped = curve_values(trace["conditions"]["injection@3"],
                          AdaptationSettings(adapted_threshold=0.5, adapted_min_kl_gap=0.25))
    np.testing.assert_array_equal(gapped["adapted_share"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(values["kl_run_new"], [0.6, 0.1, 0.1])
    np.testing.assert_allclose(values["attention_injected"], [0.6, 0.5, 0.4])   # sink removed
    np.testing.assert_allclose(values["attention_original"], [0.2, 0.3, 0.1])


def test_mean_band_averages_the_runs_still_going_at_each_token():
    band = mean_band([np.array([1.0, 2.0, 3.0]), np.array([3.0])], resamples=200)
    np.testing.assert_allclose(band.mean, [2.0, 2.0, 3.0])
    np.testing.assert_array_equal(band.n_docs, [2, 1, 1])
    np.testing.assert_array_equal(band.tokens, [1, 2, 3])
    assert band.low[0] <= 2.0 <= band.high[0] and np.isnan(band.low[1:]).all()   # no interval from one run


def test_mean_band_coverage_is_near_the_confidence_level():
    """Simulation with known truth: 600 independent tokens (columns), 40 problems each, true mean 0.
    The pointwise percentile bootstrap of a mean covers it about 95% of the time (slightly less at
    n = 40); the binomial sd of the observed share over 600 columns is about 0.009."""
    rng = np.random.default_rng(7)
    runs = list(rng.exponential(1.0, size=(40, 600)) - 1.0)   # skewed, mean 0
    band = mean_band(runs, resamples=1000, confidence_level=0.95, seed=3)
    coverage = np.mean((band.low <= 0.0) & (0.0 <= band.high))
    assert 0.90 <= coverage <= 0.98, coverage


def test_task_curves_leave_out_controls_and_runs_not_injected(make_trace, run_series, simple_trace):
    traces = [simple_trace("changed-1"), simple_trace("changed-2", length=4),
              simple_trace("control", control=True),
              make_trace({1: (run_series([0.2] * 5), run_series([0.1] * 5)), 2: (None, None)}, doc_id="short")]
    curves = task_curves({"m": traces}, AdaptationSettings(), resamples=100)
    assert set(curves) == {CurveKey("m", point, kind) for point in (1, 2) for kind in ("injection", "noise")}
    np.testing.assert_array_equal(curves[CurveKey("m", 1, "injection")]["adaptation_score"].n_docs[:4], [3, 3, 3, 3])
    np.testing.assert_array_equal(curves[CurveKey("m", 2, "injection")]["adaptation_score"].n_docs, [2] * 4 + [1] * 2)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    traces = [simple_trace(f"doc-{i}", length=5 + i) for i in range(3)]
    curves = task_curves({"model-a": traces, "model-b": traces[:2]}, AdaptationSettings(), resamples=100)
    return draw_curves(curves, "Adaptation: test task", tmp_path_factory.mktemp("curves") / "test_task")


def test_curves_are_written_as_png_and_svg_and_are_not_blank(drawn):
    png, svg = drawn
    assert (png.suffix, svg.suffix) == (".png", ".svg")
    pixels = imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05          # not a blank canvas
    text = svg.read_text()
    ElementTree.fromstring(text.encode())        # well-formed XML
    for words in ("Adaptation: test task", "tokens generated since the injection", "noise control",
                  "KL(run || new)", "model-b, injected after N=2 tokens"):
        assert words in text, words


def test_the_same_curves_give_the_same_svg_bytes(drawn, tmp_path, simple_trace):
    traces = [simple_trace(f"doc-{i}", length=5 + i) for i in range(3)]
    curves = task_curves({"model-a": traces, "model-b": traces[:2]}, AdaptationSettings(), resamples=100)
    _, again = draw_curves(curves, "Adaptation: test task", tmp_path / "test_task")
    assert again.read_bytes() == drawn[1].read_bytes()
