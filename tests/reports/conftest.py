"""Fixtures only the tests in this folder use; their implementations live in tests/report_runs.py."""
import pytest
import report_runs


@pytest.fixture(scope="session")
def make_trace():
    """report_runs.make_trace: a trace from {point: series} for the report tests."""
    return report_runs.make_trace


@pytest.fixture(scope="session")
def simple_trace():
    """report_runs.simple_trace: a small valid trace with the given points."""
    return report_runs.simple_trace


@pytest.fixture(scope="session")
def write_run():
    """report_runs.write_run: an lm-eval-shaped run folder (results, traces)."""
    return report_runs.write_run


@pytest.fixture(scope="session")
def write_prm():
    """report_runs.write_prm: a legacy PRM summary file in a run folder."""
    return report_runs.write_prm


@pytest.fixture(scope="session")
def check_seed_format():
    """report_runs.check_seed_format: the original study's per-problem keys."""
    return report_runs.check_seed_format
