"""The ratio table: every benchmark adds its rows; the terminal summary prints them side by side
with the machine's details (timed with --benchmark-enable; smoke sizes when timing is disabled)."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # measure, comparisons, naive_reference

from measure import format_table  # noqa: E402

_ROWS = []
_SMOKE = []

# Repetitions per contender when timed (KVINJECT_BENCH_REPEATS overrides); with timing disabled each
# contender runs once, at smoke sizes.
TIMED_REPEATS = int(os.environ.get("KVINJECT_BENCH_REPEATS", "5"))


@pytest.fixture
def comparison(benchmark):
    """``comparison(run)`` calls ``run(repeats, smoke)`` under pytest-benchmark (its rows go to the
    table and to the benchmark's extra_info) and returns what ``run`` returned."""

    def measure(run):
        smoke = benchmark.disabled
        result = benchmark.pedantic(run, args=(1 if smoke else TIMED_REPEATS, smoke), rounds=1, iterations=1)
        rows = result[0] if isinstance(result, tuple) else result
        rows = rows if isinstance(rows, list) else [rows]
        _ROWS.extend(rows)
        _SMOKE.append(smoke)
        benchmark.extra_info.update({row.name: row.ratio for row in rows})
        return result

    return measure


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    title = ("kvinject ratio table (timing disabled: one repetition at smoke sizes, NOT a measurement; "
             "rerun with --benchmark-enable)" if any(_SMOKE) else
             f"kvinject ratio table (medians of {TIMED_REPEATS} interleaved repetitions, one process)")
    terminalreporter.write_line("")
    terminalreporter.write_line(format_table(_ROWS, title))
