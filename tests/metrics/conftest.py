"""Fixtures only the tests in this folder use; their implementations live in tests/helpers.py."""
import helpers
import pytest


@pytest.fixture(scope="session")
def build_trace():
    """helpers.build_trace: a valid schema-1 trace from {point: (injection, noise)} series."""
    return helpers.build_trace


@pytest.fixture(scope="session")
def build_answers():
    """helpers.build_answers: the scored answers of a trace's conditions."""
    return helpers.build_answers


@pytest.fixture(scope="session")
def attention_segments():
    """helpers.attention_segments: per-segment attention shares of a run."""
    return helpers.attention_segments
