"""`kvinject analyze` (the original study's flags through lm-eval) and `kvinject single`."""
import json

import pytest

from kvinject import cli
from kvinject.model_adapters.trace_log import read_traces

PAIRS = [
    {"original": "What is 3 + 5?", "alternative": "What is 4 + 5?", "original_answer": 8, "alternative_answer": 9},
    {"original": "What is the capital of France?", "alternative": "What is the capital of Spain?",
     "original_answer": "Paris", "alternative_answer": "Madrid"},
    {"original": "Tom has 3 apples and buys 5 more. How many apples does he have now?",
     "alternative": "Tom has 3 apples and buys 7 more. How many apples does he have now?",
     "original_answer": 8, "alternative_answer": 10},
]


def test_analyze_refuses_bad_flags_before_loading_anything(tmp_path, capsys):
    bad = tmp_path / "pairs.json"
    bad.write_text(json.dumps([{**PAIRS[0], "alternative": ""}], indent=1))
    base = ["analyze", "--model", "/does/not/exist", "--output_path", str(tmp_path / "out")]
    assert cli.main(base + ["--dataset", str(bad)]) == 2
    assert "pairs.json, line 2: field 'alternative' must be a non-empty string" in capsys.readouterr().err
    assert cli.main(base + ["--dataset", str(bad), "--injection_points", "5,x"]) == 2
    assert "--injection_points '5,x'" in capsys.readouterr().err
    assert cli.main(base + ["--task", "adaptation_math", "--model_args", "strategy=sideways"]) == 2
    assert "strategy" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_analyze_with_the_seed_flags_writes_results_traces_and_the_report(local_model_dir, tmp_path, capsys):
    dataset = tmp_path / "pairs.json"
    dataset.write_text(json.dumps(PAIRS, indent=2))
    out = tmp_path / "out"
    # the original study's spellings, accepted as aliases of --limit and --output_path
    code = cli.main(["analyze", "--model", str(local_model_dir), "--dataset", str(dataset), "--num_problems", "3",
                     "--injection_points", "1,2", "--output_dir", str(out), "--device", "cpu", "--max_gen_toks", "4"])
    assert code == 0
    folder = next(out.rglob("results_*.json")).parent
    results = json.loads(next(folder.glob("results_*.json")).read_text())
    assert results["config"]["model"] == "kvinject" and "adaptation_pairs" in results["results"]
    assert results["config"]["model_args"]["injection_points"] == [1, 2]
    records = read_traces(next(folder.glob("traces_*.jsonl.gz")))
    assert [r["trace"]["doc_id"] for r in records] == ["pair-1", "pair-2", "pair-3"]
    assert records[0]["trace"]["settings"]["max_new_tokens"] == 4
    assert len(next(folder.glob("samples_adaptation_pairs_*.jsonl")).read_text().splitlines()) == 3
    report = out / "report"
    assert (report / "leaderboard.md").is_file()
    assert len(list((report / "problems").rglob("*.json"))) == 3  # one per problem


@pytest.mark.slow
def test_single_on_smollm2_prints_the_summary(tmp_path, capsys):
    code = cli.main(["single", "--model", "smollm2-135m", "--original", "What is the capital of France?",
                     "--alternative", "What is the capital of Spain?", "--original_answer", "Paris",
                     "--alternative_answer", "Madrid", "--injection_points", "2", "--max_gen_toks", "16",
                     "--output_path", str(tmp_path / "single")])
    assert code == 0
    out = capsys.readouterr().out
    assert "baseline (original prompt" in out and "oracle (alternative prompt" in out
    assert "injection@2: after 2 tokens the new problem was appended" in out or "injection@2: not injected" in out
    if "injection@2: after" in out:
        assert "switched:" in out and "adaptation_score" in out and "injection_accuracy" in out
    record = read_traces(next((tmp_path / "single").glob("traces_*.jsonl.gz")))[0]
    assert record["task"] == "adaptation_pairs" and record["trace"]["doc_id"] == "single"
    assert record["trace"]["conditions"]["baseline"]["text"].strip()[:20] in out
    assert "curve image:" in out


def test_single_without_answers_leaves_answer_measures_out(local_model_dir, tmp_path, capsys):
    code = cli.main(["single", "--model", str(local_model_dir), "--original", "What is 3 + 5?",
                     "--alternative", "What is 4 + 5?", "--injection_points", "1", "--max_gen_toks", "4",
                     "--output_path", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "injection_accuracy" not in out and "[answer" not in out
    assert "adaptation_score" in out  # trace-based measures are still there


def test_single_task_doc_and_bad_combinations(local_model_dir, tmp_path, capsys):
    assert cli.main(["single", "--model", str(local_model_dir), "--original", "x"]) == 2
    assert "give --original and --alternative" in capsys.readouterr().err
    assert cli.main(["single", "--model", str(local_model_dir), "--task", "adaptation_semantic", "--doc", "no-such-doc"]) == 2
    assert "--doc 'no-such-doc': no such doc id" in capsys.readouterr().err
    code = cli.main(["single", "--model", str(local_model_dir), "--task", "adaptation_semantic", "--doc", "1",
                     "--injection_points", "1", "--max_gen_toks", "3", "--output_path", str(tmp_path)])
    assert code == 0
    assert "kvinject single:" in capsys.readouterr().out
