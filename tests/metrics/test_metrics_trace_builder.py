"""The metric tests' trace builder (tests/helpers.py) gives traces that validate_trace accepts."""
import pytest

from kvinject.trace_schema import SCHEMA_VERSION, SEGMENTS, validate_trace


def test_built_trace_follows_the_schema(build_trace, run_series):
    trace = build_trace({5: (run_series([0.1, 0.2]), run_series([0.3, 0.4])), 10: (None, None)})
    validate_trace(trace)
    assert trace["schema_version"] == SCHEMA_VERSION
    assert set(trace["conditions"]) == {"baseline", "oracle", "injection@5", "noise@5",
                                        "injection@10", "noise@10"}
    run = trace["conditions"]["injection@5"]
    assert run["ids"] == run["pre_ids"] + run["post_ids"] and len(run["pre_ids"]) == 5
    assert len(run["series"]["attention"]["injected"]) == len(run["post_ids"])
    for token in range(2):
        for layer in range(2):
            total = sum(run["series"]["attention"][s][token][layer] for s in SEGMENTS)
            assert abs(total - 1.0) < 1e-12
    never = trace["conditions"]["noise@10"]
    assert never["injected"] is False and never["series"]["kl_run_new"] == []
    assert trace["conditions"]["noise@5"]["noise_kind"] == "random"


def test_the_builder_refuses_a_trace_the_schema_rejects(build_trace, run_series):
    with pytest.raises(ValueError, match="trace field conditions.injection@5.series"):
        build_trace({5: (run_series([0.1, 0.2], track_hidden=False), run_series([0.3, 0.4]))})


def test_built_traces_without_tracking_or_injection_validate(build_trace, run_series):
    for attention, hidden in ((False, False), (True, False), (False, True)):
        trace = build_trace({5: (None, None), 3: (run_series([0.1], track_attention=attention,
                                                             track_hidden=hidden),) * 2},
                            track_attention=attention, track_hidden=hidden,
                            stop_reasons={5: ("eos", "eos"), 3: ("eos", "stop_sequence")})
        validate_trace(trace)
        assert trace["conditions"]["injection@5"]["series"]["kl_run_old"] == []
