"""`kvinject report` writes OUT/index.html: one offline page whose embedded data are the report's own values.

The offline checks read the page's embedded JSON back (reports.html_page.read_page_data); the
browser test renders the page in Debian's headless chromium (installed by .ci/run).
"""
import csv
import math
import re
import shutil
import subprocess

import numpy as np
import pytest
from report_runs import HTML_DOCS, write_html_runs

from kvinject import cli
from kvinject.adaptation_tasks.adaptation_semantic.answers import match_semantic_answer
from kvinject.metrics import AdaptationSettings, doc_metrics, metric_aggregation
from kvinject.metrics.series import adaptation_scores
from kvinject.reports.html_page import A_T_SCALE, FLOAT_DIGITS, read_page_data, token_pieces
from kvinject.reports.per_problem import problem_report

FULL = AdaptationSettings(report="full")


def _report(tmp_path, traced_model="model-a"):
    fixture = write_html_runs(tmp_path / "out", traced_model)
    assert cli.main(["report", str(tmp_path / "out"), "--output_path", str(tmp_path / "report"),
                     "--bootstrap_resamples", "50"]) == 0
    html = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    return html, read_page_data(html), fixture


@pytest.fixture
def page(tmp_path):
    return _report(tmp_path) + (tmp_path / "report",)


def _close(shown, value) -> bool:
    """Equal up to the page's rounding (FLOAT_DIGITS significant digits)."""
    return math.isclose(shown, value, rel_tol=10 ** (1 - FLOAT_DIGITS) / 2, abs_tol=1e-12)


def test_page_requests_nothing_from_outside(page):
    html = page[0]
    assert "://" not in html
    for pattern in (r"\bsrc\s*=", r"\bhref\s*=", r"url\(", r"@import", r"<link\b", r"<iframe\b", r"\bfetch\(",
                    r"XMLHttpRequest", r"<img\b"):
        assert not re.search(pattern, html, re.IGNORECASE), pattern


def test_leaderboard_values_are_those_of_the_csv(page):
    _, data, _, folder = page
    with (folder / "leaderboard.csv").open(newline="") as handle:
        header, *rows = csv.reader(handle)
    assert data["leaderboard"]["header"] == header
    assert data["leaderboard"]["rows"] == rows
    assert {row[header.index("model")] for row in rows} == {"model-a", "model-b"}
    assert "0.5" in {row[header.index("injection_accuracy@1")] for row in rows}


def test_token_values_are_the_traces_a_t_and_divergences(page):
    _, data, fixture, _ = page
    problems = {problem["doc_id"]: problem for problem in data["problems"] if problem["traced"]}
    assert sorted(problems) == sorted(doc[0] for doc in HTML_DOCS)
    compared = 0
    for trace in fixture["traces"]:
        shown = {item["name"]: item for item in problems[trace["doc_id"]]["conditions"]}
        assert set(shown) == set(trace["conditions"])
        for name, entry in trace["conditions"].items():
            if "series" not in entry:
                assert "series" not in shown[name]
                continue
            series = entry["series"]
            expected = {"a": adaptation_scores(series["kl_run_old"], series["kl_run_new"]),
                        "klo": series["kl_run_old"], "kln": series["kl_run_new"],
                        "lpo": series["logp_old"], "lpn": series["logp_new"]}
            for short, values in expected.items():
                assert len(shown[name]["series"][short]) == len(entry["post_ids"]) == len(values)
                assert all(_close(a, b) for a, b in zip(shown[name]["series"][short], values)), (name, short)
            assert len(set(shown[name]["series"]["a"])) > 3, "a_t should vary along the run"
            compared += 1
    assert compared == 2 * 2 * len(HTML_DOCS)


def test_marks_are_the_metric_packages_events(page):
    """Adaptation points equal the per-problem JSON's latency; first alarms give the run's detection rate."""
    _, data, fixture, _ = page
    problems = {problem["doc_id"]: problem for problem in data["problems"] if problem["traced"]}
    payloads, alarmed = [], []
    for trace in fixture["traces"]:
        report = problem_report(trace, 0, "m", "t", AdaptationSettings())
        conditions = {item["name"]: item for item in problems[trace["doc_id"]]["conditions"]}
        injection = conditions["injection@1"]
        if report["token_analysis"]["injection_1"]["summary"]["assessment"] != "identical control":
            assert injection["adapt"] == report["token_analysis"]["injection_1"]["summary"]["adaptation_latency_tokens"]
            assert injection["adapt"] is not None
            alarmed.append(injection["alarm"] is not None)
        assert conditions["noise@1"]["alarm"] is None   # the detector alarms on injection runs
        payloads.append(doc_metrics(trace, {}, FULL)["detection_rate@1"])
    rate = metric_aggregation("detection_rate@1", AdaptationSettings())(payloads)
    assert math.isnan(rate) or rate == np.mean(alarmed)


def test_answers_are_the_task_matchers(page):
    _, data, fixture, _ = page
    docs = {doc["id"]: doc for doc in fixture["docs"]}
    for problem in data["problems"]:
        doc = docs[problem["doc_id"]]
        assert (problem["gold_old"], problem["gold_new"]) == (doc["original_answer"], doc["alternative_answer"])
        for item in problem["conditions"]:
            assert item["answer"] == match_semantic_answer(item["text"], doc), (problem["doc_id"], item["name"])
        if problem["traced"]:
            assert problem["correct"]["1"] is True   # the injection runs state the new answer


def test_a_run_without_traces_shows_its_samples(page):
    _, data, _, _ = page
    untraced = [problem for problem in data["problems"] if problem["model"] == "model-b"]
    assert len(untraced) == len(HTML_DOCS)
    for problem in untraced:
        assert problem["traced"] is False and [item["name"] for item in problem["conditions"]] == ["baseline"]
        assert problem["conditions"][0]["text"] == f"The answer is {problem['gold_old']}."
        assert problem["metrics"]["injection_accuracy@1"] in (0.0, 1.0)
    assert [problem["correct"]["1"] for problem in sorted(untraced, key=lambda p: p["index"])] == [True, False, False]


def test_token_pieces_spell_the_decoded_text(tiny_tokenizer_class):
    tokenizer = tiny_tokenizer_class()
    ids = tokenizer.encode("The answer is Paris.", add_special_tokens=False)
    pieces = token_pieces(tokenizer, ids[6:], ids[:6])
    assert len(pieces) == len(ids) - 6 and "".join(pieces) == tokenizer.decode(ids[6:])
    assert token_pieces(None, ids) is None


# ---- a real browser ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args, timeout=120) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _dom_and_console(url: str) -> tuple[str, list[str]]:
    """The DOM after the page's script ran, and what the page logged to the console."""
    result = _chromium("--dump-dom", url)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def _dom(url: str) -> str:
    dom, console = _dom_and_console(url)
    assert not console, console
    return dom


def _body(dom: str) -> dict:
    """The attributes of the <body> element after the page's script ran."""
    tag = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


def _with_script(tmp_path, name: str, script: str) -> str:
    """A copy of the report's page with a script run after the page's own (what a reader's clicks would do)."""
    page = tmp_path / "report" / f"{name}.html"
    page.write_text((tmp_path / "report" / "index.html").read_text(encoding="utf-8").replace(
        "</body>", f"<script>{script}</script></body>"), encoding="utf-8")
    return page.as_uri()


def _set_filters(values: dict) -> str:
    return "".join(f'var f = document.querySelector(\'[data-filter="{name}"]\'); f.value = "{value}"; '
                   'f.dispatchEvent(new Event("input", {bubbles: true}));' for name, value in values.items())


def _screenshot(url: str, path) -> np.ndarray:
    from matplotlib.image import imread

    result = _chromium(f"--screenshot={path}", "--window-size=1280,900", url)
    assert result.returncode == 0 and path.exists(), result.stderr[-2000:]
    return imread(path)


def _scale_colour(a: float) -> tuple[int, ...]:
    """The page's diverging scale: linear in RGB between the stops of A_T_SCALE."""
    stops = [(at, tuple(int(hex_[i:i + 2], 16) for i in (1, 3, 5))) for at, hex_ in A_T_SCALE]
    for (a0, c0), (a1, c1) in zip(stops, stops[1:]):
        if a <= a1:
            return tuple(round(x0 + (a - a0) / (a1 - a0) * (x1 - x0)) for x0, x1 in zip(c0, c1))
    return stops[-1][1]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt-get)")
def test_page_renders_in_a_real_browser(tmp_path, local_model_dir):
    _, data, _ = _report(tmp_path, traced_model=str(local_model_dir))   # a local folder: real token texts
    url = (tmp_path / "report" / "index.html").as_uri()
    dom = _dom(url)
    assert _body(dom).get("data-ready") == "1" and "data-js-errors" not in _body(dom)
    assert re.search(r'<div id="js-errors" hidden="">\s*</div>', dom)
    rows = re.findall(r'<tr data-i="(\d+)" data-doc="([^"]+)"', dom)
    assert [int(index) for index, _ in rows] == list(range(len(data["problems"])))
    assert [doc for _, doc in rows] == [problem["doc_id"] for problem in data["problems"]]
    assert len(re.findall(r'<tr>\s*<td data-col', dom)) == len(data["leaderboard"]["rows"])
    assert dom.count("<svg") >= 6   # the six curve panels of the traced task

    index = next(i for i, problem in enumerate(data["problems"]) if problem["traced"] and not problem["control"])
    problem_dom = _dom(f"{url}#problem={index}")
    assert "data-js-errors" not in _body(problem_dom)
    assert problem_dom.count('class="inj"') >= 4 and 'class="mark adapt"' in problem_dom
    coloured = re.findall(r'data-t="(\d+)" data-a="([^"]*)" style="background:\s*rgb\((\d+), (\d+), (\d+)\)',
                          problem_dom)
    shown = [item for item in data["problems"][index]["conditions"] if "series" in item]
    assert len(coloured) == sum(item["n_post"] for item in shown)
    expected = [a for item in shown for a in item["series"]["a"]]
    assert [float(a) for _, a, *_ in coloured] == expected
    assert [tuple(map(int, rgb)) for *_, r, g, b in coloured for rgb in [(r, g, b)]] == \
        [_scale_colour(a) for a in expected]
    assert all(item["post"] is not None for item in shown)   # the tokenizer gave token texts

    # Sorting the leaderboard: the first click sorts descending, the second ascending.
    docs_column = data["leaderboard"]["header"].index("n_docs")
    for clicks, expected in ((1, ["3", "1"]), (2, ["1", "3"])):
        click = f'document.querySelector(\'#board th[data-col="{docs_column}"]\').click();' * clicks
        dom = _dom(_with_script(tmp_path, f"sorted{clicks}", click))
        assert re.findall(rf'<td data-col="{docs_column}" data-v="(\d*)"', dom) == expected, clicks

    # Filters and search, as a reader would set them.
    dom = _dom(_with_script(tmp_path, "filtered", _set_filters({"model": "model-b"})))
    assert re.search(r'id="count">3 of 6 problems<', dom)
    dom = _dom(_with_script(tmp_path, "searched", _set_filters({"search": "GERMANY"})))
    assert re.search(r'id="count">2 of 6 problems<', dom)
    shown = re.findall(r'<tr data-i="\d+" data-doc="([^"]+)"(?: style="")?>', dom)
    assert sorted(shown) == ["capital-fr-de", "capital-fr-de"]

    # The error checks can fail: a page with a broken script shows the error and logs it.
    dom, console = _dom_and_console(_with_script(tmp_path, "broken", "notDefinedAnywhere();"))
    assert _body(dom).get("data-js-errors") == "1"
    assert re.search(r'<div id="js-errors">JavaScript error: [^<]*notDefinedAnywhere is not defined', dom)
    assert any("Uncaught ReferenceError" in line for line in console), console

    for name, address in (("page", url), ("problem", f"{url}#problem={index}")):
        pixels = _screenshot(address, tmp_path / f"{name}.png")
        assert pixels.shape[0] >= 800 and pixels[..., :3].std() > 0.05, name
        assert (pixels[..., :3] < 0.5).mean() > 0.005, f"{name}: almost no dark (text) pixels"


def test_ci_installs_the_browser():
    """CI installs the browser the rendering test needs, so it is not skipped there."""
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "apt-get install -y chromium" in script
