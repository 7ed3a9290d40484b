"""The augmented math set: built from each accepted source format, answers checked by an independent evaluator."""
import ast
import json
import operator
import os
from fractions import Fraction
from pathlib import Path

import pytest

from kvinject.adaptation_tasks.adaptation_math import data as math_data
from kvinject.adaptation_tasks.adaptation_math.mawps_builder import SetSpec, build_augmented_set
from kvinject.adaptation_tasks.adaptation_math.mawps_sources import SOURCE_ENV_VAR, MawpsSourceError, read_mawps_source

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
FIXTURE_SOURCES = {
    "svamp_csv_folder": FIXTURES / "svamp_cv",
    "mwptoolkit_json": FIXTURES / "mwptoolkit_MAWPS.json",
    "calc_mawps_jsonl_folder": FIXTURES / "calc_mawps",
}
SMALL = SetSpec(total=8, identical=2)
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def exact_value(equation: str) -> Fraction:
    """Evaluates an infix equation on its own (not the builder's evaluator): Python's parser, Fraction maths."""

    def walk(node):
        if isinstance(node, ast.BinOp):
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant):
            return Fraction(str(node.value))
        raise ValueError(f"unexpected {ast.dump(node)} in {equation!r}")

    return walk(ast.parse(equation, mode="eval").body)


def assert_answers_follow_equations(docs):
    for doc in docs:
        for side in ("original", "alternative"):
            assert exact_value(doc[f"{side}_equation"]) == Fraction(doc[f"{side}_answer"]), (doc["id"], side)
        if doc["variation_type"] == "identical":
            assert doc["alternative_question"] == doc["original_question"]
            assert doc["alternative_answer"] == doc["original_answer"]
        else:
            assert doc["alternative_answer"] != doc["original_answer"], doc["id"]
            assert doc["alternative_question"] != doc["original_question"], doc["id"]


def assert_text_reads_naturally(docs):
    for doc in docs:
        for text in (doc["original_question"], doc["alternative_question"]):
            assert " ." not in text and " ," not in text and " ?" not in text, text
            assert ".0 " not in text and not text.endswith(".0"), text


@pytest.mark.parametrize("source", FIXTURE_SOURCES.values(), ids=FIXTURE_SOURCES.keys())
def test_each_source_format_builds_a_consistent_set(source):
    docs = build_augmented_set(read_mawps_source(str(source)).problems, SMALL)
    assert [d["variation_type"] for d in docs].count("identical") == 2
    assert {d["variation_type"] for d in docs} == {"identical", "single_number", "multiple_numbers", "added_step"}
    assert len({d["source_id"] for d in docs}) == len(docs) == 8
    assert_answers_follow_equations(docs)
    assert_text_reads_naturally(docs)


def test_changed_numbers_are_recorded_and_appear_in_the_text():
    docs = build_augmented_set(read_mawps_source(str(FIXTURE_SOURCES["svamp_csv_folder"])).problems, SMALL)
    for doc in docs:
        if doc["variation_type"] == "single_number":
            assert len(doc["changed_numbers"]) == 1
        if doc["variation_type"] == "multiple_numbers":
            assert len(doc["changed_numbers"]) >= 2
        for change in doc["changed_numbers"]:
            assert change["original"] != change["alternative"]
            assert change["alternative"] in doc["alternative_question"]
        if doc["variation_type"] == "added_step":
            assert doc["added_sentence"] and doc["added_sentence"] in doc["alternative_question"]


def test_build_is_deterministic():
    problems = read_mawps_source(str(FIXTURE_SOURCES["mwptoolkit_json"])).problems
    assert build_augmented_set(problems, SMALL) == build_augmented_set(list(reversed(problems)), SMALL)


def test_unsolved_equations_are_skipped_not_fatal():
    source = read_mawps_source(str(FIXTURE_SOURCES["mwptoolkit_json"]))
    assert source.unusable_rows == 1  # "X-9=4" is not solved for its unknown


def test_missing_source_names_the_env_var_and_formats(tmp_path):
    with pytest.raises(MawpsSourceError, match=SOURCE_ENV_VAR) as raised:
        read_mawps_source(str(tmp_path / "nowhere.json"))
    assert "cv_mawps" in str(raised.value) and "MAWPS.json" in str(raised.value)


def test_unreadable_source_names_the_env_var(tmp_path):
    broken = tmp_path / "MAWPS.json"
    broken.write_text("{not json")
    with pytest.raises(MawpsSourceError, match=SOURCE_ENV_VAR):
        read_mawps_source(str(broken))


def test_unreachable_hub_id_gives_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):  # what load_dataset raises without a connection, without waiting for one
        raise ConnectionError("Couldn't reach 'kvinject-test/no-such-dataset' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MawpsSourceError, match="load_dataset") as raised:
        read_mawps_source("kvinject-test/no-such-dataset")
    assert SOURCE_ENV_VAR in str(raised.value)


def test_built_set_is_cached_by_checksum_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv("KVINJECT_CACHE", str(tmp_path))
    monkeypatch.setattr(math_data, "build_augmented_set", lambda problems: build_augmented_set(problems, SMALL))
    source = str(FIXTURE_SOURCES["calc_mawps_jsonl_folder"])
    first = math_data.augmented_math_set(source)
    [cached] = tmp_path.glob("adaptation_math-v*.json")
    assert json.loads(cached.read_text()) == first

    def must_not_rebuild(problems):
        raise AssertionError("the cached set should have been used")

    monkeypatch.setattr(math_data, "build_augmented_set", must_not_rebuild)
    assert math_data.augmented_math_set(source) == first


REAL_SOURCE = os.environ.get(SOURCE_ENV_VAR)


@pytest.mark.skipif(not REAL_SOURCE, reason=f"{SOURCE_ENV_VAR} is not set (CI points it at ../shared/data/mawps/svamp/cv_mawps)")
def test_real_source_builds_500_problems_with_exact_answers():
    docs = build_augmented_set(read_mawps_source(REAL_SOURCE).problems)
    counts = {kind: [d["variation_type"] for d in docs].count(kind) for kind in ("identical", "single_number", "multiple_numbers", "added_step")}
    assert counts == {"identical": 120, "single_number": 127, "multiple_numbers": 127, "added_step": 126}
    assert len({d["source_id"] for d in docs}) == 500
    assert_answers_follow_equations(docs)
    assert_text_reads_naturally(docs)
