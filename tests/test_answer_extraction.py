"""Answer extraction and new/old classification on realistic model outputs."""
import pytest

from kvinject.adaptation_tasks.adaptation_math.answers import extract_math_answer, match_math_answer, parse_number
from kvinject.adaptation_tasks.adaptation_semantic.answers import match_semantic_answer, normalise

MATH_DOC = {"original_answer": "504", "alternative_answer": "540"}


@pytest.mark.parametrize(
    "output, expected",
    [
        ("He has 56 books on each of 9 shelves, so 56 * 9 = 504.\nThe final answer is $\\boxed{504}$.", "504"),
        ("First 6 * 9 = 54, then 54 * 10 = 540. The answer is 540. Check: 540 / 10 = 54", "540"),
        ("56 * 9 = 504 books in total", "504"),
        ("Total cost: $1,250.50 after 3 payments of $416.", "$416"),
        ("\\boxed{\\frac{3}{4}}", "3/4"),
        ("the answer is \\dfrac{7}{2} cups.", "7/2"),
        ("The temperature drops to -5 degrees.", "-5"),
        ("So the answer is 12,000, not 3.", "12000"),
        ("\\boxed{\\text{42 apples}} and then 7 more words", "42"),
        ("I am not sure how to solve this.", None),
        ("Partial work: \\boxed{12", "12"),  # box cut off by the token budget: fall back to the last number
        ("The answer is 8 * 5 = 40.", "40"),  # an equation chain: its result, not its first number
        ("So we get \\boxed{8 \\times 5 = 40}.", "40"),
        ("\\boxed{8 \\times 5}", "40"),  # a bare product in the box is evaluated
        ("The answer is: 12 + 30 = 42 apples, since 42 > 40.", "42"),
        ("Total: \\boxed{13{,}710}", "13710"),  # LaTeX thousands separators
        ("She pays $13\\,710$ in total.", "13710"),
        ("The answer is 1\\,250\\,000.", "1250000"),
        ("\\boxed{7 \\cdot 6 = 42}", "42"),
        ("The answer is $\\frac{3}{4}$ of the cake.", "3/4"),
        ("The answer is 540.", "540"),
        ("8 \\div 2 = 4, so the answer is 4.", "4"),
    ],
)
def test_math_extraction(output, expected):
    answer = extract_math_answer(output)
    if expected is None:
        assert answer is None
    else:
        assert parse_number(answer) == parse_number(expected.strip("$"))


def test_boxed_beats_later_numbers_and_answer_is_beats_last_number():
    assert parse_number(extract_math_answer("\\boxed{10} Next question: 3 + 4 = 7")) == 10
    assert parse_number(extract_math_answer("So the answer is 15. Bonus: 2 + 2 = 4")) == 15


@pytest.mark.parametrize(
    "output, new, old",
    [
        ("so \\boxed{540}", True, False),
        ("so \\boxed{504}", False, True),
        ("so \\boxed{500}", False, False),
        ("the answer is 540.0000001", True, False),  # numeric tolerance
        ("no number here", False, False),
    ],
)
def test_math_classification(output, new, old):
    result = match_math_answer(output, MATH_DOC)
    assert (result["new"], result["old"]) == (new, old)


def test_identical_control_is_both_new_and_old():
    result = match_math_answer("\\boxed{504}", {"original_answer": "504", "alternative_answer": "504"})
    assert result == {"answer": "504", "new": True, "old": True}


SEMANTIC_DOC = {"original_aliases": ["Kyiv", "Kiev"], "alternative_aliases": ["Ulaanbaatar", "Ulan Bator"]}


@pytest.mark.parametrize(
    "output, new, old",
    [
        (" Ulaanbaatar\nQuestion: What is", True, False),
        (" The capital is Ulan Bator.", True, False),
        (" Kiev", False, True),
        (" KYIV!", False, True),
        (" Ulaanbaatarian food", False, False),  # a whole-word match only
        ("\n\n", False, False),
        (" Kyiv is the capital. Wait, the new question... The answer is Ulan Bator.", True, False),
        (" The answer is Kiev. Hmm, Mongolia: its capital is Ulaanbaatar.", False, True),  # stated answer wins
        (" Kyiv... no wait, Mongolia has Ulaanbaatar as its capital", True, False),  # last mention wins
        (" The answer is: U.S. dollar.", False, False),
    ],
)
def test_semantic_classification(output, new, old):
    result = match_semantic_answer(output, SEMANTIC_DOC)
    assert (result["new"], result["old"]) == (new, old)


def test_normalisation_removes_case_punctuation_and_accents():
    assert normalise("  Brasília, D.C. ") == "brasilia d c"
    assert match_semantic_answer("Yaounde", {"original_aliases": ["Yaoundé"], "alternative_aliases": ["Lima"]})["old"]
