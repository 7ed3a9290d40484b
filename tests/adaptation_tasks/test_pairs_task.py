"""Your own pairs file as an adaptation task: the loader, its errors, the matcher, and lm-eval runs."""
import json
import os
import subprocess
import sys

import pytest

from kvinject.adaptation_tasks.adaptation_pairs.answers import match_pair_answer
from kvinject.adaptation_tasks.adaptation_pairs.data import PairsFileError, load_pairs_dataset, read_pairs

PAIRS = [
    {"original": "What is 3 + 5?", "alternative": "What is 4 + 5?", "original_answer": 8, "alternative_answer": "9"},
    {"id": "cap", "original": "What is the capital of France?", "alternative": "What is the capital of Spain?",
     "original_answer": "Paris", "alternative_answer": ["Madrid", "Madrid, Spain"], "variation_type": "capital"},
    {"original": "What is 2 + 2?", "alternative": "What is 2 + 2?", "original_answer": 4, "alternative_answer": 4},
]


def write_jsonl(path, pairs):
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return path


def test_jsonl_pairs_become_contract_docs(tmp_path):
    docs = read_pairs(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    assert [d["id"] for d in docs] == ["pair-1", "cap", "pair-3"]
    assert [d["variation_type"] for d in docs] == ["changed", "capital", "identical"]
    assert docs[0]["original_answer"] == "8" and docs[0]["answer_kind"] == "number"
    assert docs[1]["alternative_aliases"] == ["Madrid", "Madrid, Spain"] and docs[1]["answer_kind"] == "text"
    assert docs[1]["original_question"] == "What is the capital of France?"


def test_a_json_array_and_a_pairs_object_are_read_too(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(PAIRS, indent=2))
    (tmp_path / "b.json").write_text(json.dumps({"pairs": PAIRS}, indent=2))
    assert read_pairs(tmp_path / "a.json") == read_pairs(tmp_path / "b.json")
    assert len(read_pairs(tmp_path / "a.json")) == 3


@pytest.mark.parametrize("broken, message", [
    (lambda p: p[2].pop("alternative_answer"), "line 3: field 'alternative_answer' is missing"),
    (lambda p: p[1].update(original=""), "line 2: field 'original' must be a non-empty string"),
    (lambda p: p[0].update(variation_type="identical"), "line 1: field 'alternative' must equal original"),
    (lambda p: p[0].update(answer=3), "line 1: unknown field(s) answer"),
    (lambda p: p[1].update(alternative_answer=[]), "line 2: field 'alternative_answer' must be a string"),
    (lambda p: p[2].update(id="cap"), "line 3: field 'id' 'cap' repeats the pair on line 2"),
])
def test_malformed_pairs_name_the_line_and_field(tmp_path, broken, message):
    pairs = json.loads(json.dumps(PAIRS))
    broken(pairs)
    with pytest.raises(PairsFileError) as error:
        read_pairs(write_jsonl(tmp_path / "pairs.jsonl", pairs))
    assert message in str(error.value) and "pairs.jsonl" in str(error.value)


def test_broken_json_names_its_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n{\"original\": \n")
    with pytest.raises(PairsFileError, match="line 2: not valid JSON"):
        read_pairs(path)
    array = tmp_path / "pairs.json"
    array.write_text(json.dumps(PAIRS, indent=2).replace('"What is 2 + 2?",', '"What is 2 + 2?"', 1))
    with pytest.raises(PairsFileError, match=r"pairs.json, line \d+: not valid JSON"):
        read_pairs(array)
    assert "line 1:" not in str(pytest.raises(PairsFileError, read_pairs, array).value)


def test_the_dataset_path_is_required_and_resolved(tmp_path, monkeypatch):
    with pytest.raises(PairsFileError, match="needs a pairs file"):
        load_pairs_dataset()
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    monkeypatch.chdir(tmp_path.parent)
    dataset = load_pairs_dataset(dataset_path="pairs.jsonl", config_source=str(tmp_path / "task.yaml"), pretrained="x")
    assert dataset["test"].num_rows == 3
    with pytest.raises(PairsFileError, match="not found"):
        load_pairs_dataset(dataset_path="nope.jsonl")


def test_answers_match_numerically_or_by_alias(tmp_path):
    number, text, _ = read_pairs(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    assert match_pair_answer("so 4 + 5 = 9.0. The answer is 9.", number) == {"answer": "9", "new": True, "old": False}
    assert match_pair_answer("The answer is 8", number)["old"]
    assert match_pair_answer("The capital is Madrid. The answer is Madrid.", text)["new"]
    assert not match_pair_answer("The answer is Paris.", text)["new"]


def lm_eval(args, cwd):
    return subprocess.run([sys.executable, "-m", "lm_eval", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ), timeout=600)


def test_a_four_line_user_yaml_runs_through_include_path(local_model_dir, tmp_path):
    write_jsonl(tmp_path / "my_pairs.jsonl", PAIRS)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "my_pairs.yaml").write_text(
        "task: my_pairs\n"
        "class: !function kvinject.adaptation_tasks.adaptation_pairs.task.PairsTask\n"
        "metadata:\n"
        "  dataset_path: ../my_pairs.jsonl\n"  # relative to this YAML
    )
    result = lm_eval(["--model", "kvinject", "--model_args", f"pretrained={local_model_dir},injection_points=1",
                      "--tasks", "my_pairs", "--include_path", str(tasks), "--limit", "2",
                      "--gen_kwargs", "max_gen_toks=4", "--output_path", str(tmp_path / "out")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "my_pairs" in result.stdout and "baseline_accuracy" in result.stdout


def test_the_builtin_task_takes_the_file_from_metadata_and_names_a_bad_one(local_model_dir, tmp_path):
    pairs = json.loads(json.dumps(PAIRS))
    pairs[1]["alternative"] = 7
    write_jsonl(tmp_path / "bad.jsonl", pairs)
    result = lm_eval(["--model", "kvinject", "--model_args", f"pretrained={local_model_dir}", "--tasks", "adaptation_pairs",
                      "--metadata", json.dumps({"dataset_path": "bad.jsonl"}), "--limit", "1"], cwd=tmp_path)
    assert result.returncode != 0
    assert "bad.jsonl, line 2: field 'alternative' must be a non-empty string" in result.stderr


def test_own_pairs_matcher_reads_negations_and_corrections(tmp_path):
    number, text = read_pairs(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))[:2]
    for output in ("The answer is not 8 but 9.", "The answer is 9 (not 8).", "The answer is 8 — no, 9.", "The answer is nine, not eight."):
        assert (match_pair_answer(output, number)["new"], match_pair_answer(output, number)["old"]) == (True, False), output
    for output in ("The answer is not Paris but Madrid.", "The answer is Madrid (Paris is France's capital).", "The answer is Paris — no, Madrid."):
        assert (match_pair_answer(output, text)["new"], match_pair_answer(output, text)["old"]) == (True, False), output
