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


# Realistic outputs against realistic pairs: new (alternative), old (original), both, neither, and prose
# whose ordinary words look like one-word answers.
CAPITALS = {"original_aliases": ["Berlin"], "alternative_aliases": ["Paris"]}
SAINTS = {"original_aliases": ["St. George's", "Saint George's", "St. Georges"], "alternative_aliases": ["Saint Paul", "St. Paul", "St Paul"]}
YEMEN = {"original_aliases": ["Sana'a", "Sanaa"], "alternative_aliases": ["Sarajevo"]}
WON = {"original_aliases": ["Won", "South Korean Won", "Korean won", "KRW"], "alternative_aliases": ["Yen", "Japanese Yen", "JPY"]}
XCD = {"original_aliases": ["East Caribbean Dollar", "East Caribbean dollars", "XCD"], "alternative_aliases": ["US Dollar", "US dollars", "United States dollar", "U.S. dollar", "USD"]}
CFA = {"original_aliases": ["CFA Franc BCEAO", "West African CFA Franc", "CFA franc", "XOF"], "alternative_aliases": ["Icelandic Krona", "Icelandic Króna", "ISK"]}
URANIUM = {"original_aliases": ["U"], "alternative_aliases": ["W"]}
TIN = {"original_aliases": ["Tin"], "alternative_aliases": ["Lead"]}
STATES = {"original_aliases": ["Washington D.C.", "Washington"], "alternative_aliases": ["Ottawa"]}
CONTROL = {"original_aliases": ["Canberra"], "alternative_aliases": ["Canberra"]}


@pytest.mark.parametrize(
    "doc, output, new, old",
    [
        (CAPITALS, " Paris is the capital of France. The answer is Paris.", True, False),
        (CAPITALS, " Germany's capital is Berlin. The answer is Berlin.", False, True),
        (CAPITALS, " The answer is Paris, not Berlin.", True, False),
        (CAPITALS, " The answer is Berlin, not Paris.", False, True),
        (CAPITALS, " The answer is Paris rather than Berlin.", True, False),
        (CAPITALS, " Both Berlin and Paris are capitals. The answer is Berlin and Paris.", True, True),
        (CAPITALS, " I think it is Madrid. The answer is Madrid.", False, False),
        (CAPITALS, " Berlin was the old answer, but for France it is Paris", True, False),
        (CAPITALS, " Paris, not Berlin.", True, False),
        (CAPITALS, "", False, False),
        (SAINTS, " Grenada's capital is St. George's. The answer is St. George's.", False, True),
        (SAINTS, " The answer is Saint George's.", False, True),
        (SAINTS, " The answer is St. Paul. It lies on the Mississippi.", True, False),
        (SAINTS, " The answer is St Paul.", True, False),
        (SAINTS, " Minnesota's capital is Saint Paul.", True, False),
        (YEMEN, " The answer is Sanaa.", False, True),
        (YEMEN, " The answer is Sana'a.", False, True),
        (YEMEN, " The answer is Sarajevo.", True, False),
        (WON, " The answer is the South Korean won.", False, True),
        (WON, " The answer is Won.", False, True),
        (WON, " Korea won the match 3-1 and uses a new currency. The answer is the Japanese yen.", True, False),
        (WON, " South Korea won independence in 1945 and its currency", False, False),  # "won" the verb
        (WON, " Won", False, True),  # an exact short answer
        (WON, " The answer is yen.", True, False),
        (XCD, " The answer is the East Caribbean dollar.", False, True),
        (XCD, " The answer is East Caribbean dollars (XCD).", False, True),
        (XCD, " The answer is the U.S. dollar.", True, False),
        (XCD, " The answer is the United States dollar.", True, False),
        (XCD, " The answer is USD.", True, False),
        (XCD, " The answer is the Canadian dollar.", False, False),
        ({"original_aliases": ["Colombian Peso", "COP"], "alternative_aliases": ["Euro"]}, " A cop told me it is the peso", False, False),
        ({"original_aliases": ["Colombian Peso", "COP"], "alternative_aliases": ["Euro"]}, " The answer is COP.", False, True),
        (CFA, " The answer is the West African CFA franc.", False, True),
        (CFA, " The answer is the CFA franc.", False, True),
        (CFA, " The answer is the Icelandic króna.", True, False),
        (CFA, " The answer is the Icelandic krona.", True, False),
        (URANIUM, " The answer is U.", False, True),
        (URANIUM, " The answer is U (uranium).", False, True),
        (URANIUM, " The answer is: U.S. dollar.", False, False),  # "U" inside "U.S." is no symbol
        (URANIUM, " Uranium is used in the U.S. and W is tungsten", False, False),  # letters in prose
        (URANIUM, " The answer is W.", True, False),
        (TIN, " It could lead to confusion, but tin is Sn. The answer is Tin.", False, True),
        (TIN, " Metals such as tin and lead were known in antiquity", False, False),  # common words in prose
        (TIN, " The answer is lead.", True, False),
        (STATES, " The answer is Washington, D.C.", False, True),
        (STATES, " The answer is Washington, D.C. It is on the Potomac.", False, True),
        (STATES, " The answer is Ottawa.", True, False),
        (CONTROL, " The answer is Canberra.", True, True),
        (CONTROL, " Sydney is larger, but the answer is Sydney.", False, False),
    ],
)
def test_semantic_matcher_on_realistic_outputs(doc, output, new, old):
    result = match_semantic_answer(output, doc)
    assert (result["new"], result["old"]) == (new, old), result
