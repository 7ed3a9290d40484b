"""Fixtures only the tests in this folder use; their implementations live in tests/helpers.py."""
import helpers
import pytest


@pytest.fixture(scope="session")
def full_log_probs():
    """helpers.full_log_probs: fp32 log-probabilities of one forward pass over ids."""
    return helpers.full_log_probs


@pytest.fixture(scope="session")
def prompt_cache():
    """helpers.prompt_cache: a prompt's cache from a forward with explicit positions."""
    return helpers.prompt_cache


@pytest.fixture(scope="session")
def assert_forked_append_matches_one_forward_pass():
    """helpers.assert_forked_append_matches_one_forward_pass: the engine's exactness statement."""
    return helpers.assert_forked_append_matches_one_forward_pass


@pytest.fixture(scope="session")
def old_context_against_decode():
    """helpers.old_context_against_decode: old-context scores beside the decode distributions."""
    return helpers.old_context_against_decode


@pytest.fixture(scope="session")
def windowed_model():
    """helpers.windowed_model: a tiny sliding-window model of a family."""
    return helpers.windowed_model


@pytest.fixture(scope="session")
def assert_same_trace():
    """helpers.assert_same_trace: two traces equal to a tolerance, path named."""
    return helpers.assert_same_trace


@pytest.fixture(scope="session")
def no_stop():
    """helpers.no_stop: a stop rule that never stops (branches run to their budget)."""
    return helpers.no_stop


@pytest.fixture(scope="session")
def logit_tolerance():
    """helpers.logit_tolerance: the logit tolerance of a dtype at a logit scale."""
    return helpers.logit_tolerance
