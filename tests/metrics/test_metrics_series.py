"""Per-token quantities and times to an event: known values, degenerate cases, properties."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kvinject.metrics.events import first_time, stabilization_time
from kvinject.metrics.series import (
    LOG_PROB_FLOOR,
    adaptation_scores,
    clamped_cosines,
    final_window,
    log_ratios,
    non_sink_masses,
)

INF = math.inf


@pytest.mark.parametrize("old, new, expected", [
    (1.0, 1.0, 0.5), (0.0, 0.0, 0.5), (3.0, 1.0, 0.75), (0.0, 2.0, 0.0), (2.0, 0.0, 1.0),
    (INF, 1.0, 1.0), (1.0, INF, 0.0), (INF, INF, 0.5), (-1e-12, 1.0, 0.0), (-1e-12, -1e-12, 0.5),
    (1e308, 1e308, 0.5), (5e-324, 0.0, 1.0), (5e-324, 5e-324, 0.5),
])
def test_adaptation_score_known_values(old, new, expected):
    assert adaptation_scores([old], [new])[0] == pytest.approx(expected)


def test_adaptation_score_rejects_nan_and_mismatched_lengths():
    with pytest.raises(ValueError, match="kl_run_old"):
        adaptation_scores([math.nan], [1.0])
    with pytest.raises(ValueError, match="shape"):
        adaptation_scores([1.0, 2.0], [1.0])


def test_adaptation_score_of_an_empty_run_is_empty():
    assert adaptation_scores([], []).shape == (0,)


divergences = hnp.arrays(
    float, st.integers(1, 20),
    elements=st.floats(min_value=0.0, allow_nan=False, allow_infinity=True) | st.just(-1e-15))


@given(divergences, st.data())
def test_adaptation_score_is_finite_in_unit_interval_and_symmetric(old, data):
    new = data.draw(hnp.arrays(float, old.shape, elements=st.floats(
        min_value=0.0, allow_nan=False, allow_infinity=True)))
    scores = adaptation_scores(old, new)
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    assert np.allclose(adaptation_scores(new, old), 1.0 - scores)


@given(st.floats(0, 1e300, allow_subnormal=False), st.floats(0, 1e300, allow_subnormal=False),
       st.floats(1e-3, 1e3))
def test_adaptation_score_is_scale_free_and_monotone(old, new, factor):
    # The same divergences in another unit (bits vs nats) give the same score. Subnormal inputs
    # are excluded: rescaling 5e-324 by 0.5 underflows to 0, a different input.
    assert adaptation_scores([old * factor], [new * factor])[0] == pytest.approx(
        adaptation_scores([old], [new])[0], abs=1e-9)
    assert adaptation_scores([old + 1.0], [new])[0] >= adaptation_scores([old], [new])[0] - 1e-12


@given(hnp.arrays(float, 5, elements=st.floats(max_value=0.0, allow_nan=False,
                                                 allow_infinity=True)),
       hnp.arrays(float, 5, elements=st.floats(max_value=0.0, allow_nan=False,
                                                 allow_infinity=True)))
def test_log_ratio_is_finite_on_extreme_log_probabilities(new, old):
    ratios = log_ratios(new, old)
    assert np.all(np.isfinite(ratios)) and np.all(np.abs(ratios) <= -LOG_PROB_FLOOR + 1e-9)


def test_log_ratio_known_values():
    assert log_ratios([-1.0, -3.0, -INF], [-2.0, -1.0, -INF]).tolist() == [1.0, -2.0, 0.0]


def test_non_sink_masses_renormalise_without_the_sink(attention_segments):
    attention = attention_segments(injected=[0.5, 0.2], original=[0.25, 0.6], sink=0.6,
                                   n_layers=3)
    masses = non_sink_masses(attention)
    assert masses["injected"][:, 0].tolist() == pytest.approx([0.5, 0.2])
    assert masses["original_prompt"][:, 2].tolist() == pytest.approx([0.25, 0.6])
    assert sum(masses.values()) == pytest.approx(np.ones((2, 3)))


def test_token_with_all_mass_on_the_sink_gets_zero_everywhere(attention_segments):
    attention = attention_segments(injected=[0.5], original=[0.5], sink=1.0, n_layers=1)
    assert all(mass.tolist() == [[0.0]] for mass in non_sink_masses(attention).values())


def test_final_window_takes_the_last_tokens_or_all_of_a_short_run():
    assert final_window(np.arange(5), 2).tolist() == [3, 4]
    assert final_window(np.arange(3), 10).tolist() == [0, 1, 2]


def test_first_time_is_one_based_and_censored_only_by_the_budget():
    assert first_time([False, False, True, False], True) == {"time": 3, "status": "event"}
    assert first_time([False, False], True) == {"time": 2, "status": "censored"}
    assert first_time([False, False], False) == {"time": 2, "status": "never"}
    assert first_time([], True) == {"time": 0, "status": "censored"}


@pytest.mark.parametrize("condition, hold, expected", [
    ([0, 1, 0, 1, 1], None, (4, "event")),     # holds from t=4 to the end
    ([1, 1, 1], None, (1, "event")),
    ([1, 1, 0], None, (3, "censored")),        # fails at the end: never stable
    ([], None, (0, "censored")),               # empty window
    ([0, 1, 1, 0, 1, 1, 1], 2, (2, "event")),  # first 2-token streak starts at t=2
    ([0, 1, 0, 1, 1, 1], 3, (4, "event")),
    ([0, 1, 0, 1, 1], 3, (5, "censored")),     # the final streak is too short to confirm
    ([1, 1], 3, (2, "censored")),              # the run is shorter than k
])
def test_stabilization_time(condition, hold, expected):
    result = stabilization_time(np.asarray(condition, dtype=bool), hold, budget_hit=True)
    assert (result["time"], result["status"]) == expected
    stopped = stabilization_time(np.asarray(condition, dtype=bool), hold, budget_hit=False)
    assert stopped["status"] == ("event" if expected[1] == "event" else "never")


@given(st.lists(st.booleans(), max_size=30), st.integers(1, 5))
def test_stabilization_never_precedes_the_first_crossing(condition, hold):
    first = first_time(condition, True)
    for result in (stabilization_time(condition, hold, True), stabilization_time(condition, None, True)):
        assert result["time"] <= len(condition)
        if result["status"] == "event":
            assert first["status"] == "event" and result["time"] >= first["time"]
            assert all(condition[result["time"] - 1:][:hold])


def test_cosines_are_clamped_to_the_unit_interval():
    assert clamped_cosines([[1.000000238, -1.0000002, 0.3]]).tolist() == [[1.0, -1.0, 0.3]]
