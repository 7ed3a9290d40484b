"""`kvinject report` writes every output for a run folder and names bad input without a traceback."""
import json
import subprocess
import sys

from kvinject import cli


def test_report_writes_tables_curves_and_one_json_per_problem(tmp_path, capsys, simple_trace, write_run):
    write_run(tmp_path / "out" / "model-a", "model-a", {"injection_accuracy@1,none": 0.5},
              [simple_trace("doc-a"), simple_trace("doc-b")])
    write_run(tmp_path / "out" / "model-b", "model-b", {"injection_accuracy@1,none": 0.7})   # no traces
    code = cli.main(["report", str(tmp_path / "out"), "--output_path", str(tmp_path / "report"),
                     "--bootstrap_resamples", "50"])
    assert code == 0
    captured = capsys.readouterr()
    # without traces its docs and injection settings cannot be shown to match: its own group
    assert "| model-b | adaptation_semantic | B | 1 |" in captured.out
    assert "differ in docs, injection settings (trace)" in captured.out
    assert "no traces beside it" in captured.err
    report = tmp_path / "report"
    for name in ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "curves/adaptation_semantic.png",
                 "curves/adaptation_semantic.svg"):
        assert (report / name).stat().st_size > 0, name
    assert sorted(p.name for p in (report / "problems" / "model-a" / "adaptation_semantic").iterdir()) == \
        ["00000_doc-a.json", "00001_doc-b.json"]
    assert not (report / "problems" / "model-b").exists()


def test_bad_input_is_named(tmp_path, capsys, simple_trace, write_run):
    write_run(tmp_path / "out", "model-a", {"injection_accuracy@1,none": 0.5}, [simple_trace()])
    assert cli.main(["report", str(tmp_path / "nowhere"), "--output_path", str(tmp_path / "r")]) == 2
    assert "nowhere: not a folder" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "out"), "--output_path", str(tmp_path / "r"),
                     "--label_thresholds", '{"good_latncy": 3}']) == 2
    assert "good_latncy" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "out"), "--output_path", str(tmp_path / "r"), "--sort_by", "nope@1"]) == 2
    assert "'nope@1'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()   # nothing half-written


def test_report_imports_no_torch():
    code = ("import sys; from kvinject.commands import report; from kvinject.reports import curves, html_page, "
            "leaderboard, per_problem, plotting, runs\nprint(sorted(m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_unreadable_trace_file_costs_its_task_not_the_leaderboard(tmp_path, capsys, simple_trace, write_run):
    folder = write_run(tmp_path / "out", "model-a", {"injection_accuracy@1,none": 0.5}, [simple_trace()])
    trace_file = next(folder.glob("traces_*.jsonl"))
    trace_file.write_text(trace_file.read_text()[:-40] + "\n")   # cut short, as by a crash
    assert cli.main(["report", str(tmp_path / "out"), "--output_path", str(tmp_path / "r")]) == 1
    assert f"cannot read traces {trace_file}" in capsys.readouterr().err
    assert "0.500" in (tmp_path / "r" / "leaderboard.md").read_text()


def test_report_says_why_it_draws_no_curves_when_nothing_was_injected(tmp_path, capsys, make_trace, write_run):
    never_injected = [make_trace({1: (None, None)}, doc_id=f"doc-{i}") for i in range(2)]
    write_run(tmp_path / "out", "model-a", {"injection_accuracy@1,none": 0.5}, never_injected)
    assert cli.main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "adaptation_semantic: no curves: no changed-problem run was injected" in err
    assert not (tmp_path / "r" / "curves").exists()


def test_null_values_of_a_strict_results_json_read_as_words(tmp_path, capsys, write_run):
    """Strict results JSON writes null for "not estimable" and for a median not reached (its
    _median_reached key says which); the leaderboard shows the words, not nan or a blank."""
    write_run(tmp_path / "out", "model-a", {
        "injection_accuracy@1,none": 0.5, "adaptation_point_share@1,none": None,
        "adaptation_point_share_ci_low@1,none": 0.1, "adaptation_point_share_ci_high@1,none": 1.0,
        "adaptation_point_median@1,none": None, "adaptation_point_median_reached@1,none": 0.0,
        "detection_latency_median@1,none": None, "detection_latency_median_reached@1,none": None,
    })
    assert cli.main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "r")]) == 0
    table = (tmp_path / "r" / "leaderboard.md").read_text()
    assert "not estimable [0.100, 1.000]" in table
    from kvinject.reports.leaderboard import read_measures

    results = json.loads((next((tmp_path / "out").glob("results_*.json"))).read_text())
    measures = read_measures(results["results"]["adaptation_semantic"])
    assert str(measures["adaptation_point_median@1"].value) == "not reached"
    assert str(measures["detection_latency_median@1"].value) == "not estimable"
