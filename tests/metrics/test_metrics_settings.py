"""AdaptationSettings: defaults, validation of a mapping, errors that name the key."""

import dataclasses

import pytest

from kvinject.metrics import AdaptationSettings


def test_defaults_are_the_documented_thresholds():
    settings = AdaptationSettings.from_mapping(None)
    assert settings == AdaptationSettings() == AdaptationSettings.from_mapping({})
    assert (settings.adapted_threshold, settings.false_alarm_rate, settings.correction) == (
        0.8, 0.05, "holm")
    assert settings.stabilization_tokens is None and settings.cusum_drift is None


def test_from_mapping_overrides_and_is_frozen():
    settings = AdaptationSettings.from_mapping(
        {"window_tokens": 4, "stabilization_tokens": 3, "cusum_drift": 0, "correction": "bh"})
    assert (settings.window_tokens, settings.stabilization_tokens) == (4, 3)
    assert settings.cusum_drift == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.window_tokens = 5
    assert AdaptationSettings.from_mapping(settings.to_dict()) == settings


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ValueError, match="window_size") as error:
        AdaptationSettings.from_mapping({"window_size": 3})
    assert "window_tokens" in str(error.value) and "false_alarm_rate" in str(error.value)


@pytest.mark.parametrize("key, value", [
    ("window_tokens", 2.5), ("window_tokens", True), ("adapted_threshold", "0.5"),
    ("correction", 1), ("per_layer", 1), ("stabilization_tokens", 1.0),
    ("horizon_tokens", 32.0), ("adapted_min_kl_gap", "0.01"), ("report", True),
])
def test_wrong_type_names_the_key(key, value):
    with pytest.raises(TypeError, match=key):
        AdaptationSettings.from_mapping({key: value})


@pytest.mark.parametrize("key, value", [
    ("adapted_threshold", 1.0), ("adapted_threshold", 0), ("window_tokens", 0),
    ("false_alarm_rate", 0.0), ("cusum_drift", -0.1), ("correction", "bonferroni"),
    ("detection_statistic", "entropy"), ("stabilization_tokens", 0), ("bootstrap_resamples", 0),
    ("confidence_level", 1.5), ("attention_ratio_threshold", 0.0), ("seed", -1),
    ("horizon_tokens", 0), ("adapted_min_kl_gap", -1e-3), ("report", "everything"),
])
def test_out_of_range_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        AdaptationSettings.from_mapping({key: value})


def test_integer_is_accepted_where_a_number_is_expected():
    settings = AdaptationSettings.from_mapping({"attention_ratio_threshold": 2})
    assert settings.attention_ratio_threshold == 2
