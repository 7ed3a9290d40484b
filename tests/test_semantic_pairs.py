"""The committed semantic pairs: counts, types, controls, unambiguous answers, byte-identical rebuild."""
import json
from collections import Counter

import pytest

from kvinject.adaptation_tasks.adaptation_semantic import build_pairs as build_semantic
from kvinject.adaptation_tasks.adaptation_semantic.answers import normalise


@pytest.fixture(scope="module")
def committed():
    return json.loads(build_semantic.OUTPUT_PATH.read_text(encoding="utf-8"))


def test_500_pairs_with_120_controls_over_at_least_four_types(committed):
    pairs = committed["pairs"]
    assert len(pairs) == 500 and len({pair["id"] for pair in pairs}) == 500
    variations = Counter(pair["variation_type"] for pair in pairs)
    assert variations["identical"] == 120
    assert len(set(variations) - {"identical"}) >= 4


def test_changed_answers_cannot_be_confused(committed):
    for pair in committed["pairs"]:
        if pair["variation_type"] == "identical":
            assert pair["alternative_question"] == pair["original_question"]
            assert pair["alternative_aliases"] == pair["original_aliases"]
            continue
        old, new = normalise(pair["original_answer"]), normalise(pair["alternative_answer"])
        assert old != new and old not in new and new not in old, pair["id"]
        for old_alias in pair["original_aliases"]:
            for new_alias in pair["alternative_aliases"]:
                assert normalise(old_alias) not in normalise(new_alias), pair["id"]
                assert normalise(new_alias) not in normalise(old_alias), pair["id"]


def test_every_answer_has_an_alias_list_starting_with_it(committed):
    for pair in committed["pairs"]:
        for side in ("original", "alternative"):
            assert pair[f"{side}_aliases"][0] == pair[f"{side}_answer"], pair["id"]
    currencies = [pair for pair in committed["pairs"] if pair["question_type"] == "country_currency"]
    assert sum(len(pair["original_aliases"]) > 1 for pair in currencies) > len(currencies) // 2  # name and ISO code


def test_excluded_subjects_are_absent(committed):
    subjects = {pair[f"{side}_subject"] for pair in committed["pairs"] for side in ("original", "alternative")}
    answers = {pair[f"{side}_answer"] for pair in committed["pairs"] for side in ("original", "alternative")}
    assert not subjects & build_semantic.EXCLUDED_COUNTRIES
    assert "Kingston" not in answers
    assert "Georgia" not in {p["original_subject"] for p in committed["pairs"] if p["question_type"].startswith("country")}


def test_rebuild_is_byte_identical(committed):
    rebuilt = build_semantic.render_json(build_semantic.build_pairs())
    assert json.loads(rebuilt)["sources"] == committed["sources"], "registry package versions differ from the committed build"
    assert rebuilt == build_semantic.OUTPUT_PATH.read_text(encoding="utf-8")
