"""The augmented math set: built from each accepted source format, answers checked by an independent evaluator."""
import ast
import json
import operator
import os
import random
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from kvinject.adaptation_tasks.adaptation_math import data as math_data
from kvinject.adaptation_tasks.adaptation_math.added_step import step_question
from kvinject.adaptation_tasks.adaptation_math.mawps_builder import SetSpec, build_augmented_set, make_variant
from kvinject.adaptation_tasks.adaptation_math.expression import evaluate, render
from kvinject.adaptation_tasks.adaptation_math.mawps_text import render_problem
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


# A number as a reader sees it in the text (not "mp3", not "8th"); independent of the builder's reader.
_READ_NUMBER = re.compile(r"(?<![A-Za-z0-9.])\d+(?:,\d{3})*(?:\.\d+)?(?![A-Za-z0-9]|\.\d)")


def text_numbers(text: str) -> list[Fraction]:
    return [Fraction(match.replace(",", "")) for match in _READ_NUMBER.findall(text)]


def answer_from_text(doc) -> Fraction:
    """The alternative answer re-derived from the alternative TEXT: each number of the original equation is
    tied to the one place the original text writes it, and replaced by what the alternative text writes
    there; a value written in several places must be unchanged in all of them (else the text is ambiguous);
    an added step is read from its own sentence (its number and whether it gains or loses)."""
    original = text_numbers(doc["original_question"])
    step = doc["added_sentence"]
    alternative = text_numbers(doc["alternative_question"].replace(step, "") if step else doc["alternative_question"])
    assert len(original) == len(alternative), doc["id"]

    def walk(node):
        if isinstance(node, ast.BinOp):
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        value = Fraction(str(node.value))
        places = [i for i, number in enumerate(original) if number == value]
        if len(places) == 1:
            return alternative[places[0]]
        assert all(alternative[i] == value for i in places), (doc["id"], "a repeated number changed in one place")
        return value

    value = walk(ast.parse(doc["original_equation"], mode="eval").body)
    if step:
        [amount] = text_numbers(step)
        gains = re.search(r"\b(get|gets|got|more \D+ are added)\b", step)
        loses = re.search(r"\b(lose|loses|lost|are taken away)\b", step)
        assert bool(gains) != bool(loses), step
        value = value + amount if gains else value - amount
    return value


def assert_alternatives_follow_their_text(docs):
    for doc in docs:
        assert answer_from_text(doc) == Fraction(doc["alternative_answer"]), doc["id"]
        if doc["variation_type"] != "identical":
            assert doc["alternative_answer"] != doc["original_answer"], doc["id"]


_STEP_SENTENCE = re.compile(
    r"After that, (?:(?P<subject>(?:the )?[A-Za-z]+) (?:(?:gets|get|got|will get) \d+ more|(?:loses|lose|lost|will lose) \d+) "
    r"|\d+ more (?=.* are added\.)|\d+ (?=.* are taken away\.))(?P<noun>[A-Za-z]+(?: [a-z]+){0,2}?)(?: are added| are taken away)?\."
)
_PRONOUN_OR_VERB = {"he", "she", "they", "it", "does", "do", "did", "is", "are", "was", "were", "will", "have", "has", "more"}


def assert_added_steps_change_the_asked_count(docs):
    for doc in docs:
        if doc["variation_type"] != "added_step":
            continue
        sentence = doc["added_sentence"]
        match = _STEP_SENTENCE.fullmatch(sentence)
        assert match, sentence
        noun = match.group("noun")
        assert not set(noun.lower().split()) & _PRONOUN_OR_VERB, sentence
        question = doc["alternative_question"].split(sentence)[1].strip()
        assert question.startswith(f"How many {noun} "), (sentence, question)  # the step changes the asked count
        if match.group("subject"):
            assert f" {match.group('subject')} have " in question, (sentence, question)
        assert question.count("?") == 1 and doc["alternative_question"].count("?") == 1


def assert_nouns_agree_with_numbers(docs):
    one_plural = re.compile(r"(?<![\d.,])\b1 (?!\w*ss\b)[a-z]+s\b")
    for doc in docs:
        for change in doc["changed_numbers"]:
            assert Fraction(change["original"]) >= 2 and Fraction(change["alternative"]) >= 2, doc["id"]
        assert len(one_plural.findall(doc["alternative_question"])) <= len(one_plural.findall(doc["original_question"]))


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
            assert " ' " not in text and not re.search(r"(?<![\w'])'\s", text), text  # no "' whack a mole '"


@pytest.mark.parametrize("source", FIXTURE_SOURCES.values(), ids=FIXTURE_SOURCES.keys())
def test_each_source_format_builds_a_consistent_set(source):
    docs = build_augmented_set(read_mawps_source(str(source)).problems, SMALL)
    assert [d["variation_type"] for d in docs].count("identical") == 2
    assert {d["variation_type"] for d in docs} == {"identical", "single_number", "multiple_numbers", "added_step"}
    assert len({d["source_id"] for d in docs}) == len(docs) == 8
    assert_answers_follow_equations(docs)
    assert_alternatives_follow_their_text(docs)
    assert_added_steps_change_the_asked_count(docs)
    assert_nouns_agree_with_numbers(docs)
    assert_text_reads_naturally(docs)


@pytest.mark.parametrize("source", FIXTURE_SOURCES.values(), ids=FIXTURE_SOURCES.keys())
@pytest.mark.parametrize("start", ["Sarah has 5 boxes", "Ann buys 6 roses"])
def test_a_repeated_number_gives_a_correct_alternative(source, start):
    """SVAMP's equation names the first of two equal numbers for both ("Sarah has 5 boxes. Each box holds 5
    apples"): the repeated value stays fixed, the other numbers change, and the answer follows the text."""
    [problem] = [p for p in read_mawps_source(str(source)).problems if "".join(map(str, p.segments)).startswith(start[:8])]
    for seed in range(20):
        variant = make_variant(problem, "single_number", random.Random(seed))
        assert variant is not None
        doc = {
            "id": f"{start}-{seed}",
            "variation_type": "single_number",
            "original_question": make_variant(problem, "identical", random.Random(0)).question,
            "original_equation": render(problem.equation, problem.numbers),
            "alternative_question": variant.question,
            "added_sentence": "",
            "alternative_answer": str(evaluate(variant.equation, variant.values)),
            "original_answer": str(problem.stated_answer),
        }
        assert_alternatives_follow_their_text([doc])


@pytest.mark.parametrize(
    "story, question, accepted",
    [
        ("Tom has 12 marbles.", "How many marbles does Tom have now?", True),
        ("She had 9 pencils.", "How many pieces of paper does she have left?", False),  # "paper" not in the story
        ("She had 9 pieces of paper.", "How many pieces of paper does she have left?", True),
        ("There are 2 pencils in the drawer.", "How many pencils are now there in total?", True),
        ("Kelly has 7 games.", "How many does she have left?", False),  # no noun: "does she" is no count
        ("Kelly has 7 apples.", "How many more apples does Kelly need to pick to have 20 apples altogether?", False),
        ("The children sit on 15 seats.", "How many seats will the children need in all?", False),
        ("They grew 4 watermelons.", "How many watermelons did they grow in total?", False),  # grown, not held
        ("Sara picked 6 pears.", "How many pears were picked in total?", False),
        ("He ate 5 boxes of 6 gumballs.", "How many whole boxes did he eat and how many gumballs does he have left?", False),
        ("Sam has 3 dimes. How many?", "How many dimes does Sam have now?", False),  # two questions
        ("There are 5 bacteria.", "How many more bacteria are there now?", False),
    ],
)
def test_added_steps_only_on_questions_about_a_count_the_step_changes(story, question, accepted):
    assert (step_question(story, question) is not None) == accepted


def test_rendering_removes_tokenisation_spaces():
    segments = ("at the arcade , Jerry won ", 0, " tickets playing ' whack a mole ' with the Wagners ' son and a ' ", 1,
                " Mustang . How many didn't he use ?")
    assert render_problem(segments, {0: Fraction(29), 1: Fraction(52)}) == (
        "At the arcade, Jerry won 29 tickets playing 'whack a mole' with the Wagners' son and a '52 Mustang. "
        "How many didn't he use?"
    )


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


def test_built_set_is_cached_by_checksum_and_builder_code(tmp_path, monkeypatch):
    monkeypatch.setenv("KVINJECT_CACHE", str(tmp_path))
    monkeypatch.setattr(math_data, "build_augmented_set", lambda problems: build_augmented_set(problems, SMALL))
    source = str(FIXTURE_SOURCES["calc_mawps_jsonl_folder"])
    first = math_data.augmented_math_set(source)
    [cached] = tmp_path.glob("adaptation_math-*.json")
    assert json.loads(cached.read_text()) == first

    def must_not_rebuild(problems):
        raise AssertionError("the cached set should have been used")

    monkeypatch.setattr(math_data, "build_augmented_set", must_not_rebuild)
    assert math_data.augmented_math_set(source) == first


def test_cache_key_follows_the_builder_code(tmp_path, monkeypatch):
    monkeypatch.setenv("KVINJECT_CACHE", str(tmp_path))
    monkeypatch.setattr(math_data, "build_augmented_set", lambda problems: build_augmented_set(problems, SMALL))
    source = str(FIXTURE_SOURCES["calc_mawps_jsonl_folder"])
    math_data.augmented_math_set(source)
    monkeypatch.setattr(math_data, "builder_fingerprint", lambda: "0" * 64)  # what an edited builder module gives
    math_data.augmented_math_set(source)
    assert len(list(tmp_path.glob("adaptation_math-*.json"))) == 2
    assert set(math_data.BUILDER_MODULES) >= {"mawps_builder.py", "mawps_sources.py", "added_step.py", "expression.py", "mawps_text.py"}


REAL_SOURCE = os.environ.get(SOURCE_ENV_VAR)
# the same problems in MWPToolkit's two files, when they lie where the shared data keeps them
REAL_JSON_SOURCES = [
    path
    for path in (
        Path(REAL_SOURCE or "/nowhere").parents[1] / "mwptoolkit" / "MAWPS.json" if REAL_SOURCE else None,
        Path(REAL_SOURCE or "/nowhere").parents[1] / "mwptoolkit" / "mawps_source.json" if REAL_SOURCE else None,
    )
    if path is not None and path.is_file()
]


def assert_full_set(docs):
    counts = Counter(d["variation_type"] for d in docs)
    assert counts == {"identical": 120, "single_number": 127, "multiple_numbers": 127, "added_step": 126}
    assert len({d["source_id"] for d in docs}) == 500
    # every variation type has the same mix of operation classes (largest remainders: within one doc)
    mix = Counter(d["operation_class"] for d in docs if d["variation_type"] == "added_step")
    for kind, size in counts.items():
        kind_mix = Counter(d["operation_class"] for d in docs if d["variation_type"] == kind)
        for operation in ("additive", "multiplicative"):
            assert abs(kind_mix[operation] - mix[operation] * size / 126) < 1, (kind, kind_mix)
    assert_answers_follow_equations(docs)
    assert_alternatives_follow_their_text(docs)
    assert_added_steps_change_the_asked_count(docs)
    assert_nouns_agree_with_numbers(docs)
    assert_text_reads_naturally(docs)


@pytest.mark.skipif(not REAL_SOURCE, reason=f"{SOURCE_ENV_VAR} is not set (CI points it at ../shared/data/mawps/svamp/cv_mawps)")
def test_real_source_builds_500_problems_with_exact_answers():
    assert_full_set(build_augmented_set(read_mawps_source(REAL_SOURCE).problems))


@pytest.mark.skipif(not REAL_JSON_SOURCES, reason="MWPToolkit's MAWPS files are not beside the SVAMP copy")
@pytest.mark.parametrize("source", REAL_JSON_SOURCES, ids=lambda path: path.name)
def test_real_mwptoolkit_files_build_500_problems_with_exact_answers(source):
    assert_full_set(build_augmented_set(read_mawps_source(str(source)).problems))
