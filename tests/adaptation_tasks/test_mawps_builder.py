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
from kvinject.adaptation_tasks.adaptation_math.expression import evaluate, render
from kvinject.adaptation_tasks.adaptation_math.mawps_builder import SetSpec, build_augmented_set, make_variant
from kvinject.adaptation_tasks.adaptation_math.mawps_sources import SOURCE_ENV_VAR, MawpsSourceError, read_mawps_source
from kvinject.adaptation_tasks.adaptation_math.mawps_text import render_problem

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
    r"After that, (?:(?P<subject>(?:the |Mrs?\. )?[A-Za-z]+(?: and [A-Z][a-z]+)?) (?:(?:gets|get|got|will get) \d+ more|(?:loses|lose|lost|will lose) \d+) "
    r"|\d+ more (?=.* are added(?: in all)?\.)|\d+ (?=.* are taken away(?: in all)?\.))(?P<noun>[A-Za-z]+(?: [a-z]+){0,2}?)"
    r"(?: are added| are taken away)?(?P<in_all> in all)?\."
)
_PRONOUN_SUBJECT = re.compile(r"\b(?:does|do|did|will) (he|she|they|it) have\b")
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
        subject = match.group("subject")
        story = doc["alternative_question"].split(sentence)[0]
        if subject:
            pronoun = _PRONOUN_SUBJECT.search(question)
            if pronoun is None:
                assert f" {subject} have " in question, (sentence, question)
            else:  # a pronoun is replaced by the one person (two for "they") the story names
                names = subject.split(" and ")
                assert len(names) == (2 if pronoun.group(1) == "they" else 1), (sentence, question)
                assert all(re.search(rf"\b{re.escape(name)}\b(?!'s)", story) for name in names), (sentence, story)
        # after an "each" story, or for two people, the step says the amount is in all
        if re.search(r"\b(?:each|every|per)\b", story, re.IGNORECASE) or (subject and " and " in subject):
            assert match.group("in_all"), sentence
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
            # no source tokenisation: "Mary ’ s", "grown - ups", "M & M ’ s"
            assert "’" not in text and not re.search(r"[A-Za-z] [-&] [A-Za-z]", text), text


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



# Issue 20: problems wrong as written, impossible changes, constants, tokenisation, unambiguous added steps.
def svamp_problems(tmp_path, *rows):
    """SourceProblems read from a one-fold SVAMP folder holding `rows` (question, numbers, prefix equation, answer)."""
    import csv

    fold = tmp_path / "svamp" / "fold0"
    fold.mkdir(parents=True)
    with (fold / "dev.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "Numbers", "Equation", "Answer", "group_nums", "Body", "Ques_Statement"])
        for question, numbers, equation, answer in rows:
            writer.writerow([question, numbers, equation, answer, "[]", "", ""])
    return read_mawps_source(str(tmp_path / "svamp")).problems


WRONG_AS_WRITTEN = [
    ("Tessa has number0 apples . Anita gave her number1 more . She needs number2 apples to make a pie . "
     "Does she have enough to make a pie ?", "4.0 5.0 10.0", "+ number0 number1", "9", "yes/no"),
    ("Mary found number0 seashells and Keith found number1 seashells on the beach . When they cleaned them , they "
     "discovered that number2 were cracked . How many seashells did they find together ?", "2.0 5.0 9.0",
     "+ number0 number1", "7", "larger than the answer"),
    ("Beth has number0 packs of crayons . Each pack has number1 crayons in it . She also has number2 extra crayons . "
     "How many crayons does Beth have altogether ?", "4.0 10.0 6.0", "* number0 number1", "40", "leaves out a number"),
]
SOUND = [  # distractors, comparisons and wh-questions with an auxiliary after a comma stay in
    ("Jason has number0 blue and number1 red marbles . Tom has number2 blue marbles . How many blue marbles do they "
     "have in all ?", "43.0 16.0 24.0", "+ number0 number2", "67"),
    ("There are number0 erasers in a box . Jane has number1 erasers in a bag . Doris takes number2 erasers out of the "
     "box . How many erasers are left in the box ?", "69.0 15.0 54.0", "- number0 number2", "15"),
    ("How much interest , in dollars , will you pay on a number0 dollars loan if the rate is number1 percent ?",
     "8100.0 15.0", "* number0 number1", "121500"),
    ("Tom has number0 apples . Jane has number1 apples . How many more apples does Jane have than Tom ?",
     "5.0 12.0", "- number1 number0", "7"),
    ("Mary found number0 seashells and Keith found number1 seashells on the beach . When they cleaned them , they "
     "discovered that number2 were cracked . How many seashells did they find together ?", "15.0 43.0 29.0",
     "+ number0 number1", "58"),
]


def test_problems_wrong_as_written_are_left_out_and_listed(tmp_path):
    from kvinject.adaptation_tasks.adaptation_math.mawps_builder import left_out_problems, usable_problems

    problems = svamp_problems(tmp_path, *[row[:4] for row in WRONG_AS_WRITTEN], *SOUND)
    left_out = left_out_problems(problems)
    assert [source_id for source_id, _ in left_out] == [p.source_id for p in problems[: len(WRONG_AS_WRITTEN)]]
    for (_, reason), row in zip(left_out, WRONG_AS_WRITTEN):
        assert row[4] in reason, (row[0], reason)
    kept = {p.source_id for p in usable_problems(problems)}
    assert kept == {p.source_id for p in problems[len(WRONG_AS_WRITTEN):]}  # the sound seashell story replaces the wrong one
    assert not kept & {source_id for source_id, _ in left_out}


CARROTS = ("Maria picked number0 carrots from her garden . If she threw out number1 of them and then picked number2 "
           "more the next day , how many carrots would she have total ?", "48.0 11.0 15.0", "- + number0 number2 number1", "52")


def test_changed_numbers_keep_the_story_possible_in_reading_order(tmp_path):
    from kvinject.adaptation_tasks.adaptation_math.story_checks import positive_in_reading_order

    [problem] = svamp_problems(tmp_path, CARROTS)
    assert positive_in_reading_order(problem, problem.numbers, problem.equation)
    # picked 59, threw out 67, picked 15 more: (59 + 15) - 67 > 0, but 59 - 67 < 0 as the story tells it
    impossible = {0: Fraction(59), 1: Fraction(67), 2: Fraction(15)}
    assert evaluate(problem.equation, impossible) > 0
    assert not positive_in_reading_order(problem, impossible, problem.equation)
    variants = [make_variant(problem, "multiple_numbers", random.Random(seed)) for seed in range(200)]
    variants = [variant for variant in variants if variant is not None]
    assert len(variants) > 100
    for variant in variants:
        assert variant.values[1] < variant.values[0], variant.question


def test_a_number_the_equation_uses_twice_never_changes(tmp_path):
    """"each team plays the other team 2 times" with SVAMP's `n0 * (n0 - 1) * n1 / n1`: n1 acts as the constant 2."""
    from kvinject.adaptation_tasks.adaptation_math.mawps_builder import changeable_slots

    [problem] = svamp_problems(tmp_path, (
        "The league has number0 teams . Each team plays every other team number1 times . How many games are played ?",
        "10.0 2.0", "/ * * number0 - number0 1.0 number1 number1", "90"))
    assert 1 not in changeable_slots(problem)
    for seed in range(50):
        variant = make_variant(problem, "single_number", random.Random(seed))
        assert variant is None or variant.values[1] == 2


def test_source_tokenisation_is_normalised():
    segments = ("Mary ’ s mom bought ", 0, " bags of M & M ’ s for the grown - ups at a part - time job .")
    assert render_problem(segments, {0: Fraction(3)}) == "Mary's mom bought 3 bags of M&M's for the grown-ups at a part-time job."


@pytest.mark.parametrize(
    "story, question, expected",
    [
        ("Sara has 31 red and 15 green balloons. Sandy has 24 red balloons.",
         "How many red balloons do they have in total?", r"After that, Sara and Sandy get \d+ more red balloons in all\."),
        ("Sam had 49 pennies in his bank. His dad gave him 39 pennies.",
         "How many pennies does he have now?", r"After that, Sam (gets \d+ more|loses \d+) pennies\."),
        ("There are 397 butterflies. Each butterfly has 12 black dots.",
         "How many black dots are there in all?", r"After that, \d+ more black dots are added in all\."),
        ("Clarence has 5 oranges. He gets 3 more from Joyce.", "How many oranges does he have now?", None),  # he: two people
        ("Cindy's mom baked 41 cookies. Paul's dad baked 38 cookies.", "How many cookies do they have in all?", None),
    ],
)
def test_added_steps_name_their_subject_and_say_in_all(story, question, expected):
    from kvinject.adaptation_tasks.adaptation_math.added_step import make_step

    match = step_question(story, question)
    assert match is not None
    for seed in range(10):
        step = make_step(match, Fraction(50), random.Random(seed), story)
        if expected is None:
            assert step is None
        else:
            assert re.fullmatch(expected, step.sentence), step.sentence


@pytest.mark.skipif(not REAL_SOURCE, reason=f"{SOURCE_ENV_VAR} is not set (CI points it at ../shared/data/mawps/svamp/cv_mawps)")
def test_dataset_card_lists_the_problems_left_out_of_the_svamp_copy():
    from kvinject.adaptation_tasks.adaptation_math.mawps_builder import left_out_problems

    card = (Path(math_data.__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^  \| `([^`]+)` \| ([^|]+?) \|", card, flags=re.MULTILINE)
    assert listed == left_out_problems(read_mawps_source(REAL_SOURCE).problems)
