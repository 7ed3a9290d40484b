"""`kvinject report` over a real small run: two model configurations, both tasks.

One session-scoped run (minutes on a CPU): SmolLM2-135M and a tiny local Llama folder through
`lm_eval --model kvinject`, the same settings, then `kvinject report` over the output folder.
"""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

from kvinject import cli
from kvinject.reports.leaderboard import HEADLINE_MEASURES, parse_measure_name
from kvinject.strict_json import decoded_value

pytestmark = pytest.mark.slow
TASKS = ("adaptation_math", "adaptation_semantic")
# The full report: the logged samples then carry every per-doc key the per-problem JSON is checked against.
SETTINGS = ["--tasks", ",".join(TASKS), "--limit", "2", "--gen_kwargs", "max_gen_toks=24",
            "--metadata", '{"adaptation": {"report": "full"}}']


@pytest.fixture(scope="session")
def report(tmp_path_factory, local_model_dir):
    if not os.environ.get("KVINJECT_MAWPS_SOURCE"):
        pytest.skip("KVINJECT_MAWPS_SOURCE is not set (CI points it at ../shared/data/mawps)")
    root = tmp_path_factory.mktemp("report-run")
    out = root / "out"
    for pretrained, extra in (("smollm2-135m", ["--log_samples"]), (str(local_model_dir), [])):
        result = subprocess.run(
            [sys.executable, "-m", "lm_eval", "--model", "kvinject", "--model_args",
             f"pretrained={pretrained},injection_points=1:2:4", *SETTINGS, "--output_path", str(out), *extra],
            capture_output=True, text=True, cwd=root, timeout=1800)
        assert result.returncode == 0, result.stderr[-3000:]
    assert cli.main(["report", str(out), "--output_path", str(root / "report"), "--bootstrap_resamples", "200"]) == 0
    return out, root / "report"


def _same(copied: float, recorded: float) -> bool:
    """Equal, NaN included (a detection rate no calibration could decide is NaN in the results JSON)."""
    return copied == recorded or (math.isnan(copied) and math.isnan(float(recorded)))


def _results_files(out: Path) -> dict[str, dict]:
    return {str(path): json.loads(path.read_text()) for path in out.rglob("results_*.json")}


def test_leaderboard_values_are_those_of_the_results_json(report):
    out, folder = report
    results = _results_files(out)
    rows = list(csv.DictReader((folder / "leaderboard.csv").open()))
    assert sorted((row["task"], row["model"] == "smollm2-135m") for row in rows) == \
        sorted((task, smollm2) for task in TASKS for smollm2 in (False, True))
    columns = [name for name in rows[0] if parse_measure_name(name) and parse_measure_name(name)[2] is None
               and parse_measure_name(name)[0] in HEADLINE_MEASURES]
    assert columns, "no headline measure in the results: update HEADLINE_MEASURES to the metric keys"
    markdown = (folder / "leaderboard.md").read_text()
    checked = 0
    for row in rows:
        values = {key.rsplit(",", 1)[0]: value for key, value in results[row["results_file"]]["results"][row["task"]].items()
                  if key.endswith(",none")}
        for column in columns:
            if row[column] == "":
                assert column not in values
                continue
            if values[column] is None:  # strict JSON: null reads as its word in the leaderboard
                assert row[column] == f"{decoded_value(column, None, values)}", (row["model"], row["task"], column)
                continue
            assert _same(float(row[column]), values[column]), (row["model"], row["task"], column)
            metric, point, _ = parse_measure_name(column)
            for end in ("ci_low", "ci_high"):
                if row[f"{column}_{end}"]:
                    companions = [v for k, v in values.items() if parse_measure_name(k) == (metric, point, end)]
                    assert len(companions) == 1 and _same(companions[0], float(row[f"{column}_{end}"])), (column, end)
            assert f"{values[column]:.3f}" in markdown
            checked += 1
    assert checked >= len(rows) * 2
    assert "every row was run with the same settings" in markdown   # same settings, two models
    assert r"\begin{tabular}" in (folder / "leaderboard.tex").read_text()


def test_curve_images_decode_and_are_not_blank(report):
    _, folder = report
    for task in TASKS:
        pixels = imread(folder / "curves" / f"{task}.png")
        assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05, task
        assert "<svg" in (folder / "curves" / f"{task}.svg").read_text()[:2000]


def test_one_per_problem_json_per_problem_in_the_study_format(report, check_seed_format):
    out, folder = report
    model_folders = sorted((folder / "problems").iterdir())
    assert len(model_folders) == 2
    for task in TASKS:
        for model_folder in model_folders:
            files = sorted((model_folder / task).glob("*.json"))
            assert len(files) == 2, (model_folder, task)     # --limit 2
            reports = [json.loads(path.read_text()) for path in files]
            for item in reports:
                check_seed_format(item)
            assert len({item["doc_id"] for item in reports}) == 2


def test_per_problem_values_equal_lm_evals_per_doc_metrics(report):
    """The SmolLM2 run logged its samples: the per-problem latency and attention shift must equal
    the per-doc adaptation point event (adaptation_point_share@N) / attention_shift@N that lm-eval recorded for the same doc."""
    out, folder = report
    compared = 0
    for task in TASKS:
        samples = {}
        for path in (out / "smollm2-135m").glob(f"samples_{task}_*.jsonl"):
            samples.update({json.loads(line)["doc"]["id"]: json.loads(line) for line in path.read_text().splitlines()})
        for path in (folder / "problems" / "smollm2-135m" / task).glob("*.json"):
            item = json.loads(path.read_text())
            sample = samples[item["doc_id"]]
            assert item["problem_index"] == sample["doc_id"]
            for name, entry in item["token_analysis"].items():
                point = name.split("_")[1]
                event = sample.get(f"adaptation_point_share@{point}")
                if event is None:
                    assert entry["summary"]["adapted"] is None
                    continue
                expected = event["run"]["time"] if event["run"]["status"] == "event" else None
                assert entry["summary"]["adaptation_latency_tokens"] == expected
                attention = item["attention_analysis"][name]
                assert attention["attention_shift_magnitude"] == sample[f"attention_shift@{point}"]
                compared += 1
    assert compared > 0, "no changed-problem doc was injected: nothing compared"


def test_html_page_answers_and_marks_are_lm_evals(report):
    """index.html lists every problem of both runs; for the run that logged samples, the page's
    "correct" (the task's matcher on the injection run) and adaptation points equal what lm-eval
    recorded for the same doc, and the token texts spell the injection run's output."""
    from kvinject.reports.html_page import read_page_data

    out, folder = report
    data = read_page_data((folder / "index.html").read_text(encoding="utf-8"))
    assert len(data["problems"]) == 2 * len(TASKS) * 2   # two models, --limit 2
    compared = 0
    for task in TASKS:
        samples = {}
        for path in (out / "smollm2-135m").glob(f"samples_{task}_*.jsonl"):
            samples.update({json.loads(line)["doc"]["id"]: json.loads(line) for line in path.read_text().splitlines()})
        for problem in (p for p in data["problems"] if p["model"] == "smollm2-135m" and p["task"] == task):
            sample = samples[problem["doc_id"]]
            for item in problem["conditions"]:
                if not item["name"].startswith("injection@") or "series" not in item:
                    continue
                point = item["point"]
                if f"injection_accuracy@{point}" in sample:
                    assert problem["correct"][str(point)] == (sample[f"injection_accuracy@{point}"] == 1.0)
                    event = sample[f"adaptation_point_share@{point}"]["run"]
                    assert item["adapt"] == (event["time"] if event["status"] == "event" else None)
                    compared += 1
                assert ("".join(item["pre"]) + "".join(item["post"])).startswith(item["text"])
    assert compared > 0, "no changed-problem doc was injected: nothing compared"
