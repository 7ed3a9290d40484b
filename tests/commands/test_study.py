"""`kvinject study`: the study file, --dry_run, and a 2-run study end to end on a tiny model, resumed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kvinject import cli
from kvinject.commands.study import MARKER, finished_record
from kvinject.model_adapters.model_args import parse_model_args
from kvinject.model_adapters.result_store import ResultStore
from kvinject.study import load_study, parse_study

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ROOT / "configs" / "study" / "offline-cpu.yaml"
GPU = ROOT / "configs" / "study" / "qwen2.5-math-7b-gpu.yaml"


def test_offline_study_dry_run_prints_every_run_without_a_model(capsys):
    assert cli.main(["study", str(OFFLINE), "--dry_run", "--no_timing"]) == 0
    out = capsys.readouterr().out
    study = load_study(OFFLINE)
    # issue 24's table: SmolLM2 update/semantic append+replace, math append; Gemma update append+replace,
    # semantic and math append
    expected = {("smollm2-135m", "adaptation_update", "append", 200), ("smollm2-135m", "adaptation_update", "replace", 200),
                ("smollm2-135m", "adaptation_semantic", "append", 200),
                ("smollm2-135m", "adaptation_semantic", "replace", 200), ("smollm2-135m", "adaptation_math", "append", 100),
                ("gemma3-270m", "adaptation_update", "append", 200), ("gemma3-270m", "adaptation_update", "replace", 200),
                ("gemma3-270m", "adaptation_semantic", "append", 100), ("gemma3-270m", "adaptation_math", "append", 100)}
    assert {(r.model_args["pretrained"], r.task, r.model_args["strategy"], r.limit) for r in study.runs} == expected
    for run in study.runs:
        assert run.shown_command(study.output_path) in out
        assert "--log_samples" in run.command(study.output_path)
    # runs already committed under results/ are reported as finished and not counted as to run
    finished = [r for r in study.runs if finished_record(study, r) is not None]
    for run in finished:
        assert f"{run.name}: finished (skipped)" in out
    assert f"{len(study.runs) - len(finished)} of {len(study.runs)} runs to run" in out
    assert out.count("then: kvinject compare") == len(study.comparisons) >= 9


@pytest.mark.parametrize("path", [OFFLINE, GPU], ids=lambda p: p.name)
def test_study_files_name_only_valid_model_args(path):
    for run in load_study(path).runs:
        parse_model_args(run.model_args)   # raises on an unknown or invalid arg


def test_gpu_study_is_the_original_study():
    study = load_study(GPU)
    assert {(r.task, r.model_args["strategy"]) for r in study.runs} == {
        (task, strategy) for task in ("adaptation_math", "adaptation_semantic") for strategy in ("append", "replace")}
    for run in study.runs:
        assert run.limit is None   # all 500 docs
        assert run.model_args["pretrained"] == "Qwen/Qwen2.5-Math-7B" and run.model_args["injection_points"] == [5, 10, 15]
        assert "injection_points=5:10:15" in run.shown_command(study.output_path)


@pytest.mark.parametrize("change, message", [
    ({"runs": [{"name": "x", "tasks": ["t"], "limit": 0}]}, "limit 0"),
    ({"runs": [{"name": "x", "tasks": ["t"], "colour": 1}]}, "unknown field"),
    ({"runs": [{"name": "x", "tasks": ["t"]}, {"name": "x", "tasks": ["t"]}]}, "two runs are named 'x-t'"),
    ({"comparisons": [{"a": "x-t", "b": "nope"}]}, "no run named 'nope'"),
    ({"comparisons": [{"run": "x-t", "points": [5, 5]}]}, "two different injection points"),
    ({"runs": [{"name": "x", "tasks": ["t"], "model_args": {"injection_template": "a, b"}}]}, "cannot hold"),
])
def test_bad_study_files_are_refused_naming_the_field(change, message):
    data = {"output_path": "out", "runs": [{"name": "x", "tasks": ["t"]}], **change}
    with pytest.raises(ValueError, match=message):
        study = parse_study(data)
        [run.command(study.output_path) for run in study.runs]


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert cli.main(["study", str(tmp_path / "missing.yaml"), "--dry_run"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no such study file" in error
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_path: out\nruns: [{name: x}]\n")
    assert cli.main(["study", str(bad)]) == 2
    assert "tasks: give a list of task names" in capsys.readouterr().err


def _tiny_study(tmp_path: Path, model_dir: Path) -> Path:
    study = {
        "output_path": str(tmp_path / "study"),
        "result_store": str(tmp_path / "store.sqlite"),
        "model_args": {"pretrained": str(model_dir), "injection_points": [1, 2], "device": "cpu"},
        "runs": [{"name": "tiny", "vary": {"strategy": ["append", "replace"]}, "tasks": ["adaptation_semantic"],
                  "limit": 2, "gen_kwargs": {"max_gen_toks": 6}}],
        "comparisons": [{"a": "tiny-adaptation_semantic-append", "b": "tiny-adaptation_semantic-replace"},
                        {"run": "tiny-adaptation_semantic-append", "points": [1, 2]}],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _marker(tmp_path: Path, run: str) -> dict:
    return json.loads((tmp_path / "study" / "runs" / run / MARKER).read_text())


def test_a_two_run_study_end_to_end_then_resumed_reusing_every_doc(tmp_path, local_model_dir, capsys):
    path = _tiny_study(tmp_path, local_model_dir)
    runs = ["tiny-adaptation_semantic-append", "tiny-adaptation_semantic-replace"]
    assert cli.main(["study", str(path), "--bootstrap_resamples", "200"]) == 0
    for run in runs:
        marker = _marker(tmp_path, run)
        assert (marker["docs_computed"], marker["docs_reused_from_store"]) == (2, 0)
        assert Path(marker["results_file"]).is_file() and marker["wall_seconds"] > 0 and marker["machine"]
        # the samples are committed compressed (compress_samples), the plain file removed
        assert list((tmp_path / "study" / "runs" / run).rglob("samples_adaptation_semantic_*.jsonl.gz"))
        assert not list((tmp_path / "study" / "runs" / run).rglob("samples_adaptation_semantic_*.jsonl"))
    assert (tmp_path / "study" / "report" / "leaderboard.md").is_file()
    comparisons = tmp_path / "study" / "comparisons"
    between = (comparisons / f"{runs[0]}__vs__{runs[1]}.csv").read_text()
    assert "injection_accuracy@1" in between and "kl_run_new@2" in between
    assert (comparisons / f"{runs[0]}__at2_vs_1.md").is_file()
    store = ResultStore(tmp_path / "store.sqlite")
    stored = len(store)
    store.close()
    assert stored == 4   # 2 docs x 2 strategies

    # A second invocation: every run finished, nothing is run again.
    capsys.readouterr()
    assert cli.main(["study", str(path)]) == 0
    assert capsys.readouterr().out.count("finished earlier") == 2

    # A study killed during its second run (no marker: lm-eval never finished it) continues there,
    # and every doc of that run comes from the result store.
    (tmp_path / "study" / "runs" / runs[1] / MARKER).unlink()
    first_results = _marker(tmp_path, runs[0])["results_file"]
    assert cli.main(["study", str(path)]) == 0
    assert _marker(tmp_path, runs[0])["results_file"] == first_results
    resumed = _marker(tmp_path, runs[1])
    assert (resumed["docs_computed"], resumed["docs_reused_from_store"]) == (0, 2)
    assert len(list((tmp_path / "study" / "superseded").iterdir())) == 1   # the old output, out of the report's way
    store = ResultStore(tmp_path / "store.sqlite")
    assert len(store) == stored
    store.close()


def test_dry_run_times_a_first_doc_on_a_tiny_model(tmp_path, local_model_dir, capsys):
    path = _tiny_study(tmp_path, local_model_dir)
    assert cli.main(["study", str(path), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert out.count("2 docs x") == 2 and "estimated" in out and "2 of 2 runs to run" in out
    assert not (tmp_path / "study").exists() and not (tmp_path / "store.sqlite").exists()   # nothing run


def test_dry_run_timing_names_an_unknown_task(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text("output_path: out\nruns: [{name: x, model_args: {pretrained: smollm2-135m}, tasks: [no_such_task]}]\n")
    assert cli.main(["study", str(path), "--dry_run"]) == 2
    assert "x-no_such_task: no task 'no_such_task'" in capsys.readouterr().err


@pytest.mark.slow   # a tiny model, but two lm-eval processes and a kill: about two minutes on a shared CPU
def test_a_study_killed_during_its_second_run_continues_there(tmp_path, local_model_dir, stored_docs):
    limit = 5
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "output_path": str(tmp_path / "study"), "result_store": str(tmp_path / "store.sqlite"),
        "model_args": {"pretrained": str(local_model_dir), "injection_points": [1, 3], "device": "cpu", "batch_size": 1},
        "runs": [{"name": "tiny", "vary": {"strategy": ["append", "replace"]}, "tasks": ["adaptation_semantic"],
                  "limit": limit, "gen_kwargs": {"max_gen_toks": 40}}]}))
    log = (tmp_path / "killed.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "kvinject.cli", "study", str(path)], stdout=log, stderr=log,
                               start_new_session=True)   # its own process group: lm-eval is killed with it
    deadline = time.monotonic() + 600
    while stored_docs(tmp_path / "store.sqlite") <= limit and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)   # until the second run has stored a doc
    assert process.poll() is None, f"the study ended before the kill; see {tmp_path / 'killed.log'}"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log.close()
    stored = stored_docs(tmp_path / "store.sqlite")
    assert limit < stored < 2 * limit, "the kill did not land during the second run"

    assert cli.main(["study", str(path)]) == 0
    first, second = (_marker(tmp_path, f"tiny-adaptation_semantic-{s}") for s in ("append", "replace"))
    assert (first["docs_computed"], first["docs_reused_from_store"]) == (limit, 0)   # not run again
    assert second["docs_reused_from_store"] == stored - limit >= 1
    assert second["docs_computed"] == 2 * limit - stored


def test_compressed_samples_read_back_as_written_and_both_forms_are_refused(tmp_path):
    from kvinject.commands.study import compress_samples
    from kvinject.reports.runs import find_runs

    folder = tmp_path / "run" / "m"
    folder.mkdir(parents=True)
    (folder / "results_2026-01-02T03-04-05.000006.json").write_text("{}", encoding="utf-8")
    rows = [{"doc_id": i, "doc": {"id": f"d{i}"}, "value": [i, 0.1 * i]} for i in range(3)]
    plain = folder / "samples_adaptation_semantic_2026-01-02T03-04-05.000006.jsonl"
    plain.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (run,) = find_runs([tmp_path / "run"])
    assert run.samples("adaptation_semantic") == rows
    first = compress_samples(tmp_path / "run")
    assert [p.name for p in first] == [plain.name + ".gz"] and not plain.exists()
    assert run.samples("adaptation_semantic") == rows
    # the bytes depend on the content only (no time stamp): compressing again gives the same file
    data = first[0].read_bytes()
    plain.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(ValueError, match="keep one"):
        run.samples("adaptation_semantic")
    assert compress_samples(tmp_path / "run")[0].read_bytes() == data
