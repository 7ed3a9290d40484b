"""Load time of the HTML report (index.html) in headless chromium for 1,000 problems x 8 conditions.

The page measures itself: `data-load-ms` on <body> is performance.now() when its script has built
the leaderboard, curves and problem list (milliseconds since navigation start, so reading and
parsing the file count). Timed with ``--benchmark-enable``; the unit run loads a 20-problem page
once. Token texts come from a tiny local model's tokenizer. Each problem: baseline, oracle,
injection@N and noise@N at N = 2, 4, 8, 48 tokens after the injection with every series."""
import re
import shutil
import subprocess

import pytest
from report_runs import varied_trace, write_run

from kvinject import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TARGET_MS = 3000


def _load_ms(page) -> int:
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", result.stdout).group(1)
    assert "data-js-errors" not in body
    return int(re.search(r'data-load-ms="(\d+)"', body).group(1))


@pytest.mark.slow
@pytest.mark.benchmark(group="report")
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt-get)")
def test_html_page_loads_1000_problems_in_3_seconds(benchmark, tmp_path, local_model_dir):
    n_problems = 20 if benchmark.disabled else 1000
    traces = [varied_trace(f"doc-{i}", i, points=(2, 4, 8), length=48) for i in range(n_problems)]
    # A local model folder: the page gets token texts from its tokenizer, as for a real run.
    write_run(tmp_path / "out", str(local_model_dir), {"injection_accuracy@2,none": 0.5}, traces)
    assert cli.main(["report", str(tmp_path / "out"), "--output_path", str(tmp_path / "report"),
                     "--bootstrap_resamples", "10"]) == 0
    page = tmp_path / "report" / "index.html"
    load_ms = benchmark.pedantic(_load_ms, args=(page,), rounds=1 if benchmark.disabled else 3, iterations=1)
    benchmark.extra_info.update(problems=n_problems, bytes_per_problem=page.stat().st_size / n_problems,
                                load_ms=load_ms)
    print(f"index.html: {n_problems} problems, {page.stat().st_size / n_problems / 1000:.1f} kB per problem, "
          f"loaded in {load_ms} ms")
    if not benchmark.disabled:
        assert load_ms < TARGET_MS
