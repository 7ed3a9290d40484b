"""The leaderboard reads its measures generically from lm-eval results and ranks only comparable rows."""
import csv
import io

import pytest

from kvinject.reports.leaderboard import build_leaderboard, parse_measure_name, read_measures
from kvinject.reports.runs import find_runs


def results(score: float, point_value: float = 3.0) -> dict:
    return {
        "injection_accuracy@5,none": score, "injection_accuracy@5_stderr,none": 0.01,
        "injection_accuracy_ci_low@5,none": score - 0.1, "injection_accuracy_ci_low@5_stderr,none": "N/A",
        "injection_accuracy_ci_high@5,none": score + 0.1,
        "adaptation_gap@5,none": point_value, "adaptation_gap@5_stderr,none": "N/A",
        "baseline_accuracy,none": 0.5, "baseline_accuracy_stderr,none": 0.2,
        "sample_len": 3,
    }


HIGHER = {"injection_accuracy@5": True, "adaptation_gap@5": False}


@pytest.mark.parametrize("name, parsed", [
    ("injection_accuracy@5", ("injection_accuracy", 5, None)),
    ("injection_accuracy_ci_low@5", ("injection_accuracy", 5, "ci_low")),
    ("injection_accuracy@5_ci_high", ("injection_accuracy", 5, "ci_high")),
    ("injection_accuracy@5_stderr", ("injection_accuracy", 5, "stderr")),
    ("baseline_accuracy", ("baseline_accuracy", None, None)),
    ("baseline_accuracy_stderr", ("baseline_accuracy", None, "stderr")),
    ("injection_accuracy_ci_low@5_stderr", None),   # the stderr of an interval end is no measure
    ("adaptation_point_share_ci_high@5", ("adaptation_point_share", 5, "ci_high")),
    ("acc", None),                                  # not a kvinject key (keys.parse_key's grammar)
])
def test_result_names_are_parsed_generically(name, parsed):
    assert parse_measure_name(name) == parsed


def test_measures_carry_their_interval_and_stderr_and_skip_non_numbers():
    measures = read_measures(results(0.6))
    score = measures["injection_accuracy@5"]
    assert (score.value, score.ci_low, score.ci_high, score.stderr) == (0.6, 0.6 - 0.1, 0.6 + 0.1, 0.01)
    assert measures["adaptation_gap@5"].stderr is None            # "N/A" is no number
    assert measures["baseline_accuracy"].point is None
    assert "sample_len" not in measures and "alias" not in str(measures)


def test_rows_rank_by_the_recorded_direction_and_ties_share_a_rank(tmp_path, simple_trace, write_run):
    trace = simple_trace()
    for model, point_value in (("model-a", 4.0), ("model-b", 2.0), ("model-c", 4.0)):
        write_run(tmp_path / model, model, results(0.5, point_value), [trace], higher_is_better=HIGHER)
    board = build_leaderboard(find_runs([tmp_path]), sort_by="adaptation_gap@5")
    # adaptation_gap: lower is better (higher_is_better false in the results JSON)
    assert [(row.model, row.rank) for row in board.rows] == [("model-b", 1), ("model-a", 2), ("model-c", 2)]
    assert {row.group for row in board.rows} == {"A"}
    assert any("same settings" in note for note in board.notes)
    higher = build_leaderboard(find_runs([tmp_path / "model-a", tmp_path / "model-b"]), sort_by="injection_accuracy@5")
    assert [row.rank for row in higher.rows] == [1, 1]


def test_rows_run_with_other_settings_are_not_ranked_together(tmp_path, simple_trace, write_run):
    write_run(tmp_path / "a", "model-a", results(0.9), [simple_trace()], higher_is_better=HIGHER)
    write_run(tmp_path / "b", "model-b", results(0.1), [simple_trace(strategy="replace")], higher_is_better=HIGHER,
              generation_kwargs={"max_gen_toks": 64})
    board = build_leaderboard(find_runs([tmp_path]), sort_by="injection_accuracy@5")
    assert sorted((row.group, row.rank) for row in board.rows) == [("A", 1), ("B", 1)]
    note = next(note for note in board.notes if "not compared" in note)
    assert "generation_kwargs" in note and "injection settings (trace)" in note
    assert "not compared" in board.markdown() and "not compared" in board.latex()


def test_runs_differing_only_in_where_results_go_share_a_group(tmp_path, simple_trace, write_run):
    """result_store, trace_dir, batch_size: the fingerprint leaves them out, so they never split groups."""
    write_run(tmp_path / "a", "model-a", results(0.9), [simple_trace()], higher_is_better=HIGHER)
    write_run(tmp_path / "b", "model-b", results(0.1), [simple_trace()], higher_is_better=HIGHER,
              model_args={"result_store": "none", "trace_dir": "/elsewhere", "batch_size": 4})
    board = build_leaderboard(find_runs([tmp_path]), sort_by="injection_accuracy@5")
    assert sorted((row.group, row.rank) for row in board.rows) == [("A", 1), ("A", 2)]
    write_run(tmp_path / "c", "model-c", results(0.5), [simple_trace()], higher_is_better=HIGHER,
              model_args={"injection_template": "Now: {alternative}"})  # a measurement setting does
    board = build_leaderboard(find_runs([tmp_path]), sort_by="injection_accuracy@5")
    assert sorted(row.group for row in board.rows) == ["A", "A", "B"]


def test_tables_show_the_results_json_values(tmp_path, simple_trace, write_run):
    write_run(tmp_path / "a", "model-a", results(0.123456789), [simple_trace()], higher_is_better=HIGHER)
    board = build_leaderboard(find_runs([tmp_path]), digits=3)
    assert board.columns == ["injection_accuracy@5", "adaptation_gap@5"]   # headline order, no baseline_accuracy
    row = next(csv.DictReader(io.StringIO(board.csv())))
    assert float(row["injection_accuracy@5"]) == 0.123456789
    assert float(row["injection_accuracy@5_ci_low"]) == 0.123456789 - 0.1
    assert float(row["injection_accuracy@5_stderr"]) == 0.01 and row["adaptation_gap@5_stderr"] == ""
    assert "0.123 [0.023, 0.223]" in board.markdown()
    assert r"injection\_accuracy@5" in board.latex() and "0.123 [0.023, 0.223]" in board.latex()


def test_unknown_sort_measure_and_missing_headline_measures_are_named(tmp_path, simple_trace, write_run):
    write_run(tmp_path / "a", "model-a", results(0.5), [simple_trace()])
    runs = find_runs([tmp_path])
    with pytest.raises(ValueError, match="injection_accurac@5.*injection_accuracy@5"):
        build_leaderboard(runs, sort_by="injection_accurac@5")
    notes = build_leaderboard(runs).notes
    assert any("not in any results JSON" in note and "detection_rate" in note for note in notes)


def test_runs_are_found_with_their_own_traces_only(tmp_path, simple_trace, write_run):
    folder = write_run(tmp_path / "m", "model-a", results(0.5), [simple_trace()])
    (folder / "traces_2026-01-02T03-04-05.000006_1.jsonl.gz").write_bytes(b"")
    (folder / "traces_2099-01-01T00-00-00.000000.jsonl").write_text("")   # another run's
    run, = find_runs([tmp_path])
    assert [p.name for p in run.trace_paths] == ["traces_2026-01-02T03-04-05.000006.jsonl",
                                                 "traces_2026-01-02T03-04-05.000006_1.jsonl.gz"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no lm-eval results"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(ValueError, match="not a folder"):
        find_runs([tmp_path / "nowhere"])


def _prm_rows(injection: float) -> list[dict]:
    return [{"condition": "baseline", "docs": 1, "mean": 0.11, "mean_interval": [0.1, 0.12], "min": 0.0, "min_interval": [0.0, 0.0]},
            {"condition": "oracle", "docs": 1, "mean": 0.3141592653589793, "mean_interval": [0.2, 0.4], "min": 0.1, "min_interval": [0.1, 0.1]},
            {"condition": "injection@5", "docs": 1, "mean": injection, "mean_interval": [injection - 0.05, injection + 0.05], "min": 0.0, "min_interval": [0.0, 0.0]},
            {"condition": "noise@5", "docs": 1, "mean": -0.2718281828459045, "mean_interval": [-0.5, 0.1], "min": -1.0, "min_interval": [-1.0, -1.0]},
            {"condition": "injection@9", "docs": 1, "mean": 0.9, "mean_interval": [0.8, 1.0], "min": 0.0, "min_interval": [0.0, 0.0]}]


def test_prm_columns_copy_the_prm_json_and_stay_empty_without_it(tmp_path, simple_trace, write_prm, write_run):
    scored = write_run(tmp_path / "a", "model-a", results(0.9), [simple_trace()], higher_is_better=HIGHER)
    write_prm(scored, "judge-x", {"adaptation_semantic": _prm_rows(0.123456789012345)})
    write_run(tmp_path / "b", "model-b", results(0.1), [simple_trace()], higher_is_better=HIGHER)
    board = build_leaderboard(find_runs([tmp_path]), points={5})
    assert board.columns[-3:] == ["prm_oracle", "prm_injection@5", "prm_noise@5"]   # injection@9 not shown
    table = {row["model"]: row for row in csv.DictReader(io.StringIO(board.csv()))}
    assert float(table["model-a"]["prm_injection@5"]) == 0.123456789012345
    assert float(table["model-a"]["prm_injection@5_ci_low"]) == 0.123456789012345 - 0.05
    assert float(table["model-a"]["prm_oracle"]) == 0.3141592653589793
    assert float(table["model-a"]["prm_noise@5_ci_high"]) == 0.1
    assert all(table["model-b"][f"prm_{name}"] == "" for name in ("oracle", "injection@5", "noise@5"))
    assert "DEPRECATED legacy PRM" in board.markdown() and "judge-x" in board.markdown()
    assert not any("PRM" in note for note in board.notes)


def test_prm_scores_of_different_judges_are_noted_as_not_compared(tmp_path, simple_trace, write_prm, write_run):
    for model, judge in (("model-a", "judge-x"), ("model-b", "judge-y")):
        folder = write_run(tmp_path / model, model, results(0.5), [simple_trace()], higher_is_better=HIGHER)
        write_prm(folder, judge, {"adaptation_semantic": _prm_rows(0.5)})
    board = build_leaderboard(find_runs([tmp_path]))
    assert any("PRM columns are not compared" in note and "judge-x" in note and "judge-y" in note
               for note in board.notes)
