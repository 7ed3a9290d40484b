"""`kvinject compare` on two real SmolLM2-135M runs (append vs replace), made by `kvinject study`."""
import csv
import io

import pytest
import yaml

from kvinject import cli
from kvinject.reports.comparison import compare_points, compare_runs, one_run

pytestmark = pytest.mark.slow
TASK = "adaptation_semantic"
RUNS = [f"smollm2-{TASK}-append", f"smollm2-{TASK}-replace"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2-study")
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump({
        "output_path": str(root / "out"), "result_store": str(root / "store.sqlite"),
        "runs": [{"name": "smollm2", "model_args": {"pretrained": "smollm2-135m", "injection_points": [1, 2, 4]},
                  "vary": {"strategy": ["append", "replace"]}, "tasks": [TASK], "limit": 3,
                  "gen_kwargs": {"max_gen_toks": 24}}],
        "comparisons": [{"a": RUNS[0], "b": RUNS[1]}, {"run": RUNS[0], "points": [1, 4]}]}))
    assert cli.main(["study", str(path), "--bootstrap_resamples", "200"]) == 0
    return root / "out"


def test_append_vs_replace_pairs_every_doc_and_matches_the_logged_values(study):
    runs = [one_run(study / "runs" / name) for name in RUNS]
    comparison = compare_runs(*runs)
    rows = {row.measure: row for row in comparison.rows}
    # The baseline and the oracle do not depend on the strategy: identical on every doc.
    for name in ("baseline_accuracy", "oracle_accuracy"):
        result = rows[name].result
        if result.n_pairs:
            assert result.difference == 0 and result.n_nonzero == 0 and result.pvalue == 1.0
    samples = [{s["doc"]["id"]: s for s in run.samples(TASK)} for run in runs]
    assert len(samples[0]) == len(samples[1]) == 3
    checked = 0
    for measure, row in rows.items():
        if row.result is None or "@" not in measure or not row.result.n_pairs or not measure.startswith("kl_run_new"):
            continue
        docs = [doc for doc in samples[0] if measure in samples[0][doc] and measure in samples[1][doc]]
        assert row.result.n_pairs == len(docs)
        expected = sum(samples[1][d][measure] - samples[0][d][measure] for d in docs) / len(docs)
        assert row.result.difference == pytest.approx(expected)
        checked += 1
    assert checked >= 1, "no injection point was reached in both runs"
    assert any("strategy" in note for note in comparison.notes)


def test_the_study_wrote_both_comparisons_and_the_report(study):
    table = list(csv.DictReader(io.StringIO((study / "comparisons" / f"{RUNS[0]}__vs__{RUNS[1]}.csv").read_text())))
    assert {row["measure"] for row in table} >= {"baseline_accuracy", "injection_accuracy@1", "n_docs@1"}
    assert (study / "comparisons" / f"{RUNS[0]}__at4_vs_1.md").is_file()
    assert (study / "report" / "leaderboard.md").is_file()
    points = compare_points(one_run(study / "runs" / RUNS[0]), 1, 4)
    assert all(row.measure.endswith("→4") for row in points.rows)
