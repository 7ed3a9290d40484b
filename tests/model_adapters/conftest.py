"""Fixtures only the tests in this folder use; their implementations live in tests/helpers.py."""
import helpers
import pytest


@pytest.fixture(scope="session")
def adaptation_request():
    """helpers.request: an lm-eval Instance as the adaptation tasks build it."""
    return helpers.request
