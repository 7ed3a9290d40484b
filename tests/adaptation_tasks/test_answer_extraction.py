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


# Issue 20: negations and corrections, the closing number, and numbers however they are written.
@pytest.mark.parametrize(
    "output, expected",
    [
        ("The answer is not 40 but 45.", "45"),
        ("The answer is 45 (not 40).", "45"),
        ("The answer is 45 rather than 40.", "45"),
        ("The answer is 45 instead of 40.", "45"),
        ("The answer is 40 — no, 45.", "45"),
        ("The answer is 40... no wait, 45.", "45"),
        ("\\boxed{45 \\text{ (not 40)}}", "45"),
        ("She now has 45 apples. Originally she had 40.", "45"),  # no box: a restated old value is no answer
        ("So she has 45 apples, not 40.", "45"),
        ("She had 40 apples at first, and after 5 more she has 45.", "45"),
        ("The temperature drops to \u22125 degrees.", "-5"),  # the Unicode minus
        ("The answer is twelve.", "12"),
        ("The answer is forty-five apples.", "45"),
        ("\\boxed{\\text{forty-five}}", "45"),
        ("The answer is one hundred and five.", "105"),
        ("The answer is a thousand.", "1000"),
        ("The answer is 1 000.", "1000"),
        ("The answer is 12\u2009500 dollars.", "12500"),  # thin space
        ("The answer is 2,5 kg.", "5/2"),  # a decimal comma (two digits after a comma cannot be thousands)
        ("The answer is 1.234,5.", "2469/2"),
        ("The answer is 1,500.", "1500"),  # three digits: still thousands
        ("Korea won the match 3-1.", "1"),  # a hyphen between numbers is no minus sign
    ],
)
def test_negations_corrections_and_number_spellings(output, expected):
    assert parse_number(extract_math_answer(output)) == parse_number(expected)


def test_a_lone_one_in_prose_is_no_number_but_a_stated_one_is():
    assert parse_number(extract_math_answer("He ate 7 of them. Only one is left, the answer is one.")) == 1
    assert parse_number(extract_math_answer("There are 7 apples. Take one of them home.")) == 7


@pytest.mark.parametrize(
    "doc, output, new, old",
    [
        (CAPITALS, " The answer is not Berlin but Paris.", True, False),
        (CAPITALS, " The answer is Paris (not Berlin).", True, False),
        (CAPITALS, " The answer is Paris instead of Berlin.", True, False),
        (CAPITALS, " The answer is Berlin — no, Paris.", True, False),
        (CAPITALS, " The answer is Paris (Berlin is Germany's capital).", True, False),
        (CAPITALS, " The answer is Berlin... no wait, Paris.", True, False),
        (CAPITALS, " The answer is Paris, actually.", True, False),  # a correction word with nothing after it
        (CAPITALS, " It is not Berlin but Paris", True, False),  # no answer sentence
        (CAPITALS, " Paris (Berlin is Germany's capital)", True, False),
        ({"original_aliases": ["Polish złoty", "złoty", "PLN"], "alternative_aliases": ["Euro"]}, " The answer is the Polish zloty.", False, True),
        ({"original_aliases": ["Polish złoty", "PLN"], "alternative_aliases": ["Euro"]}, " The answer is the Polish złoty.", False, True),
        (URANIUM, " The answer is the symbol W.", True, False),
        (URANIUM, " The answer is tungsten, whose symbol is W.", True, False),
        (URANIUM, " The answer is W, which replaced U.", True, False),
        ({"original_aliases": ["Fe"], "alternative_aliases": ["Sn"]}, " The answer is the symbol Sn (tin).", True, False),
        ({"original_aliases": ["26"], "alternative_aliases": ["29"]}, " The answer is twenty-six.", False, True),
        ({"original_aliases": ["1"], "alternative_aliases": ["2"]}, " The answer is one.", False, True),
        ({"original_aliases": ["1"], "alternative_aliases": ["2"]}, " Helium is one of the noble gases with two protons", True, False),
        ({"original_aliases": ["26"], "alternative_aliases": ["29"]}, " Copper has twenty-nine protons, so the answer is twenty-nine.", True, False),
    ],
)
def test_semantic_negations_corrections_symbols_and_spelled_numbers(doc, output, new, old):
    result = match_semantic_answer(output, doc)
    assert (result["new"], result["old"]) == (new, old), result


def test_normalisation_keeps_letters_nfkd_cannot_decompose():
    assert normalise("złoty") == "zloty" and normalise("Øre") == "ore" and normalise("Đồng") == "dong"


# Property: whatever the wording of a negation or correction, the negated value is never scored as stated.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st

from kvinject.adaptation_tasks.adaptation_pairs.answers import match_pair_answer  # noqa: E402

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spelled(n: int) -> str:
    """English words for 0 <= n <= 1000, written independently of the matcher's reader."""
    if n == 1000:
        return "one thousand"
    hundreds, rest = divmod(n, 100)
    tens, ones = divmod(rest, 10)
    tail = _ONES[rest] if rest < 20 else _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if not hundreds:
        return tail
    return f"{_ONES[hundreds]} hundred" + (f" and {tail}" if rest else "")


@st.composite
def written_number(draw, value):
    formats = [str(value), f"{value:,}", f"{value:,}".replace(",", "\u2009"), f"{value:,}".replace(",", " ")]
    if value <= 1000:
        formats.append(spelled(value))
    return draw(st.sampled_from(formats))


MATH_TEMPLATES = [
    "The answer is not {x} but {y}.", "The answer is {y} (not {x}).", "The answer is {y} rather than {x}.",
    "The answer is {y} instead of {x}.", "The answer is {x} — no, {y}.", "The answer is {y}, not {x}.",
    "The answer is {x}... no wait, {y}.", "So the final answer is {y} and not {x}.", "\\boxed{{{y}}} (not {x})",
    "She has {y} apples, not {x}.", "She has {y} apples instead of {x}.", "She has not {x} but {y} apples.",
    "She has {y} apples (not {x}).", "Now she has {y} apples. Originally she had {x}.",
    "Step 1: 3 + 4 = 7.\nThe answer is not {x} but {y}.",
]
distinct_values = st.tuples(st.integers(2, 20000), st.integers(2, 20000)).filter(lambda pair: pair[0] != pair[1])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MATH_TEMPLATES), distinct_values, st.data())
def test_math_and_pairs_matchers_never_score_the_negated_value(template, values, data):
    old, new = values
    output = template.format(x=data.draw(written_number(old)), y=data.draw(written_number(new)))
    doc = {"original_answer": str(old), "alternative_answer": str(new)}
    result = match_math_answer(output, doc)
    assert (result["new"], result["old"]) == (True, False), (output, result)
    pair_doc = {"answer_kind": "number", "original_aliases": [str(old)], "alternative_aliases": [str(new)]}
    result = match_pair_answer(output, pair_doc)
    assert (result["new"], result["old"]) == (True, False), (output, result)


SEMANTIC_TEMPLATES = [
    "The answer is not {x} but {y}.", "The answer is {y} (not {x}).", "The answer is {y} rather than {x}.",
    "The answer is {y} instead of {x}.", "The answer is {x} — no, {y}.", "The answer is {y}, not {x}.",
    "The answer is {y} ({x} is {place}'s capital).", "The answer is {x}... no wait, {y}.",
    "It is {y}, not {x}", "It is not {x} but {y}", "{y} ({x} is {place}'s capital)", "Instead of {x}, it is {y}",
]


def _committed_capital_pairs():
    """(place, original capital, alternative capital) of the committed changed pairs (answers that cannot be
    confused), without common-word answers, which count only as an exact answer."""
    import json

    from kvinject.adaptation_tasks.adaptation_semantic.answers import is_weak_alias
    from kvinject.adaptation_tasks.adaptation_semantic.build_pairs import OUTPUT_PATH

    pairs = json.loads(OUTPUT_PATH.read_text(encoding="utf-8"))["pairs"]
    return [
        (p["original_subject"], p["original_answer"], p["alternative_answer"])
        for p in pairs
        if p["question_type"] == "country_capital" and p["variation_type"] != "identical"
        and not is_weak_alias(p["original_answer"]) and not is_weak_alias(p["alternative_answer"])
    ]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEMANTIC_TEMPLATES), st.sampled_from(_committed_capital_pairs()))
def test_semantic_and_pairs_matchers_never_score_the_negated_answer(template, pair):
    place, old, new = pair
    output = " " + template.format(x=old, y=new, place=place)
    doc = {"original_aliases": [old], "alternative_aliases": [new]}
    result = match_semantic_answer(output, doc)
    assert (result["new"], result["old"]) == (True, False), (output, result)
    result = match_pair_answer(output, {"answer_kind": "text", **doc})
    assert (result["new"], result["old"]) == (True, False), (output, result)
