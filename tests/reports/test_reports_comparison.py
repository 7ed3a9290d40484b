"""`kvinject compare` on constructed runs: known paired differences, refusals, the points form."""
import csv
import hashlib
import io

import numpy as np
import pytest
from report_runs import write_run, write_samples

from kvinject import cli
from kvinject.metrics import AdaptationSettings, metric_aggregation
from kvinject.reports.comparison import compare_points, compare_runs, one_run

TASK = "adaptation_semantic"
N_DOCS = 40
SETTINGS = AdaptationSettings()


def _payload(level: float) -> dict:
    return {"run": [level] * SETTINGS.horizon_tokens, "noise": [0.0] * SETTINGS.horizon_tokens,
            "run_budget_hit": False, "noise_budget_hit": False, "control": False}


def _sample(index: int, values: dict, text: str = "same") -> dict:
    doc = {"id": f"doc-{index}", "original_question": f"{text} {index}?"}
    return {"doc_id": index, "doc": doc, "doc_hash": hashlib.sha256(repr(doc).encode()).hexdigest(),
            "metrics": sorted(values), **values}


def _doc_values(index: int, rng, *, kl_shift: float, accurate: bool, points=(5, 15)) -> dict:
    values = {"baseline_accuracy": 1.0, "oracle_accuracy": 1.0}
    for point in points:
        values.update({
            f"n_docs@{point}": 1.0,
            f"injection_accuracy@{point}": float(accurate),
            f"kl_run_new@{point}": float(1.0 + kl_shift + rng.normal(0, 0.2) + 0.01 * point),
            f"adaptation_point_share@{point}": {"run": {"time": 3, "status": "event" if accurate else "never"},
                                                "noise": {"time": 9, "status": "never"}},
            f"detection_rate@{point}": _payload(rng.normal(0.5 if accurate else 0.0, 0.3)),
            f"detection_calibrated@{point}": _payload(rng.normal(0.5 if accurate else 0.0, 0.3)),
        })
    return values


def _run(folder, model: str, samples: list[dict], generation_kwargs=None, **run_args):
    write_run(folder, model, {"injection_accuracy@5,none": 0.0}, task=TASK,
              generation_kwargs=generation_kwargs, **run_args)
    write_samples(folder, TASK, samples)
    return folder


@pytest.fixture
def two_runs(tmp_path):
    """B's kl_run_new is A's + 0.3 (plus noise) on every doc; B answers docs 0..19 correctly, A none."""
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(1)
    a = [_sample(i, _doc_values(i, rng_a, kl_shift=0.0, accurate=False)) for i in range(N_DOCS)]
    b = [_sample(i, _doc_values(i, rng_b, kl_shift=0.3, accurate=i < 20)) for i in range(N_DOCS)]
    return (_run(tmp_path / "a", "model-a", a, model_args={"strategy": "append"}),
            _run(tmp_path / "b", "model-a", b, model_args={"strategy": "replace"}))


def _rows(comparison) -> dict:
    return {(row.task, row.measure): row for row in comparison.rows}


def test_a_known_paired_difference_is_estimated_and_covered(two_runs):
    comparison = compare_runs(one_run(two_runs[0]), one_run(two_runs[1]))
    rows = _rows(comparison)
    kl = rows[(TASK, "kl_run_new@5")].result
    assert kl.n_pairs == N_DOCS and kl.ci_low < 0.3 < kl.ci_high and kl.pvalue < 0.01
    accuracy = rows[(TASK, "injection_accuracy@5")].result
    assert accuracy.difference == pytest.approx(0.5) and accuracy.ci_low < 0.5 < accuracy.ci_high
    assert accuracy.n_nonzero == 20 and accuracy.pvalue < 0.001
    share = rows[(TASK, "adaptation_point_share@15")].result
    assert (share.mean_a, share.mean_b) == (0.0, 0.5)
    same = rows[(TASK, "baseline_accuracy")].result
    assert same.difference == 0 and same.pvalue == 1.0
    assert rows[(TASK, "n_docs@5")].run_level == (N_DOCS, N_DOCS)
    # the strategy is what differs, and the header says so
    assert any("strategy" in note and "append" in note and "replace" in note for note in comparison.notes)


def test_detection_alarms_are_each_runs_own_detector(two_runs):
    """The mean of the per-doc alarms compared is the detection rate the run itself reports."""
    comparison = compare_runs(one_run(two_runs[0]), one_run(two_runs[1]))
    row = _rows(comparison)[(TASK, "detection_rate@5")].result
    for run, mean in ((two_runs[0], row.mean_a), (two_runs[1], row.mean_b)):
        payloads = [sample["detection_rate@5"] for sample in one_run(run).samples(TASK)]
        assert mean == pytest.approx(metric_aggregation("detection_rate@5", SETTINGS)(payloads))
    assert row.mean_b > row.mean_a


def test_only_shared_docs_are_paired(tmp_path, two_runs):
    rng = np.random.default_rng(2)
    fewer = [_sample(i, _doc_values(i, rng, kl_shift=0.3, accurate=True)) for i in range(10, 25)]
    comparison = compare_runs(one_run(two_runs[0]), one_run(_run(tmp_path / "c", "model-c", fewer)))
    assert _rows(comparison)[(TASK, "kl_run_new@5")].result.n_pairs == 15
    assert f"{TASK}: 15 docs in both runs (A has {N_DOCS}, B 15)" in comparison.notes


def test_different_docs_are_refused(tmp_path, two_runs):
    rng = np.random.default_rng(3)
    changed = [_sample(i, _doc_values(i, rng, kl_shift=0.0, accurate=True), text="other") for i in range(N_DOCS)]
    with pytest.raises(ValueError, match="doc doc-0 differs between the runs"):
        compare_runs(one_run(two_runs[0]), one_run(_run(tmp_path / "c", "model-c", changed)))
    disjoint = [_sample(i, _doc_values(i, rng, kl_shift=0.0, accurate=True)) for i in range(100, 110)]
    with pytest.raises(ValueError, match="share no doc"):
        compare_runs(one_run(two_runs[0]), one_run(_run(tmp_path / "d", "model-d", disjoint)))


def test_different_generation_settings_are_refused(tmp_path, two_runs):
    samples = one_run(two_runs[1]).samples(TASK)
    other = _run(tmp_path / "c", "model-c", samples, generation_kwargs={"max_gen_toks": 99})
    with pytest.raises(ValueError, match="generation_kwargs differ"):
        compare_runs(one_run(two_runs[0]), one_run(other))


def test_two_injection_points_of_one_run(two_runs):
    comparison = compare_points(one_run(two_runs[1]), 5, 15)
    rows = _rows(comparison)
    kl = rows[(TASK, "kl_run_new@5→15")].result
    samples = one_run(two_runs[1]).samples(TASK)
    direct = np.mean([sample["kl_run_new@15"] - sample["kl_run_new@5"] for sample in samples])
    assert kl.n_pairs == N_DOCS and kl.difference == pytest.approx(direct)
    assert kl.ci_low < 0.1 < kl.ci_high    # the true shift: 0.01 per token of injection point
    assert "baseline_accuracy" not in {row.measure for row in comparison.rows}
    with pytest.raises(ValueError, match="no injection point 10"):
        compare_points(one_run(two_runs[1]), 5, 10)


def test_cli_writes_markdown_and_csv_and_refuses_with_one_line(two_runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["compare", str(two_runs[0]), str(two_runs[1]), "--output_path", str(out),
                     "--bootstrap_resamples", "500"]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    kl = next(row for row in rows if row["measure"] == "kl_run_new@5")
    assert float(kl["ci_low"]) < 0.3 < float(kl["ci_high"]) and kl["n_pairs"] == str(N_DOCS)
    assert "| adaptation_semantic | kl_run_new@5 | 40 |" in (out / "comparison.md").read_text()
    capsys.readouterr()
    assert cli.main(["compare", str(two_runs[0]), str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "missing: not a folder" in error
    assert cli.main(["compare", str(two_runs[0])]) == 2
    assert "give two run folders" in capsys.readouterr().err


def test_runs_without_logged_samples_are_refused(tmp_path, two_runs, write_run):
    bare = write_run(tmp_path / "bare", "model-b", {"injection_accuracy@5,none": 0.0}, task=TASK)
    with pytest.raises(ValueError, match="--log_samples"):
        compare_runs(one_run(two_runs[0]), one_run(bare))
