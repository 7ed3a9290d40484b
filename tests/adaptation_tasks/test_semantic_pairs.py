"""The committed semantic pairs: counts, types, controls, unambiguous answers, byte-identical rebuild."""
import json
from collections import Counter

import pytest

from kvinject.adaptation_tasks.adaptation_semantic import build_pairs
from kvinject.adaptation_tasks.adaptation_semantic.answers import match_semantic_answer, normalise


@pytest.fixture(scope="module")
def committed():
    return json.loads(build_pairs.OUTPUT_PATH.read_text(encoding="utf-8"))


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
    assert not subjects & build_pairs.EXCLUDED_COUNTRIES
    assert "Kingston" not in answers
    assert "Georgia" not in {p["original_subject"] for p in committed["pairs"] if p["question_type"].startswith("country")}


def test_rebuild_is_byte_identical(committed):
    rebuilt = build_pairs.render_json(build_pairs.build_pairs())
    assert json.loads(rebuilt)["sources"] == committed["sources"], "registry package versions differ from the committed build"
    assert rebuilt == build_pairs.OUTPUT_PATH.read_text(encoding="utf-8")


def test_stale_disputed_and_duplicate_subjects_are_absent(committed):
    facts = {(p[f"{side}_subject"], p[f"{side}_answer"]) for p in committed["pairs"] for side in ("original", "alternative")}
    subjects = {subject for subject, _ in facts}
    assert not subjects & {"Palestine", "Western Sahara", "Hong Kong", "Tokelau", "Montserrat", "Zimbabwe",
                           "British Indian Ocean Territory", "Burma", "Republic of Macedonia"}
    answers = {answer for _, answer in facts}
    assert not answers & {"Nur-Sultan", "Plymouth", "City of Victoria", "US Dollar" if "Zimbabwe" in subjects else ""}
    rebuilt = build_pairs.collect_facts()
    assert {fact.answer for fact in rebuilt["country_capital"] if fact.subject == "Kazakhstan"} == {"Astana"}
    assert not {"Burma", "Palestine"} & {fact.subject for kind in rebuilt.values() for fact in kind}


def test_every_currency_is_accepted_by_its_common_english_name(committed):
    import iso4217
    from babel.numbers import get_currency_name

    code_of = {currency.currency_name: currency.code for currency in iso4217.Currency}
    for pair in committed["pairs"]:
        if pair["question_type"] != "country_currency":
            continue
        for side in ("original", "alternative"):
            code = code_of[pair[f"{side}_answer"]]
            for name in (get_currency_name(code, locale="en"), get_currency_name(code, count=2, locale="en")):
                doc = {"original_aliases": pair[f"{side}_aliases"], "alternative_aliases": ["Atlantis crown"]}
                assert match_semantic_answer(f" It is the {name}. The answer is the {name}.", doc)["old"], (pair["id"], name)


def test_saint_and_apostrophe_spellings_are_accepted(committed):
    for pair in committed["pairs"]:
        for side in ("original", "alternative"):
            aliases = [normalise(alias) for alias in pair[f"{side}_aliases"]]
            for alias in pair[f"{side}_aliases"]:
                if alias.startswith("St. "):
                    assert normalise("Saint " + alias[4:]) in aliases
                if alias.startswith("Saint "):
                    assert normalise("St. " + alias[6:]) in aliases
                if "'" in alias:
                    assert normalise(alias.replace("'", "")) in aliases
    assert build_pairs._spellings(["Sana'a"]) == ("Sana'a", "Sanaa")
    assert "St. Paul" in build_pairs._spellings(["Saint Paul"])
    assert "San Marino" in build_pairs._spellings(["City of San Marino"])


def test_place_names_that_take_an_article_get_it(committed):
    import re

    for pair in committed["pairs"]:
        for side in ("original", "alternative"):
            question = pair[f"{side}_question"]
            assert not re.search(r" of (?:Isle of|United|Czech|Dominican|Central African|Republic of|[A-Z]\w+ Islands\?)", question), question
    assert build_pairs._place("Isle of Man") == "the Isle of Man" and build_pairs._place("France") == "France"


def test_capitals_and_currencies_follow_the_dated_review():
    """Issue 20: Gitega (Burundi's capital since 2019), common names of currencies and capitals, ambiguous
    currency questions left out, and every currency is CLDR's only legal tender on the review date."""
    import datetime

    import countryinfo
    from babel.numbers import get_territory_currencies

    facts = build_pairs.collect_facts()
    capitals = {fact.subject: fact for fact in facts["country_capital"]}
    currencies = {fact.subject: fact for fact in facts["country_currency"]}
    assert capitals["Burundi"].answer == "Gitega"
    assert not {"Indonesia", "Equatorial Guinea"} & set(capitals)  # capital moves under way
    assert not {"Jersey", "Guernsey", "Isle of Man", "Faroe Islands"} & set(currencies)
    expected_names = {
        "Grenada": "The answer is the Eastern Caribbean dollar.", "Guyana": "The answer is the Guyanese dollar.",
        "Uzbekistan": "The answer is the Uzbek som.", "Turkmenistan": "The answer is the Turkmen manat.",
        "Nicaragua": "The answer is the córdoba.", "Poland": "The answer is the Polish złoty.",
    }
    for subject, output in expected_names.items():
        doc = {"original_aliases": list(currencies[subject].aliases), "alternative_aliases": ["Atlantis crown"]}
        assert match_semantic_answer(output, doc)["old"], (subject, currencies[subject].aliases)
    doc = {"original_aliases": list(capitals["Kiribati"].aliases), "alternative_aliases": ["Atlantis"]}
    assert match_semantic_answer("The answer is Tarawa.", doc)["old"]
    territory = {build_pairs.COUNTRY_RENAMES.get(c.name(), c.name()): c.iso(2) for c in countryinfo.all_countries()}
    import iso4217

    code_of = {currency.currency_name: currency.code for currency in iso4217.Currency}
    for subject, fact in currencies.items():
        tender = get_territory_currencies(territory[subject], datetime.date(2026, 1, 1), tender=True)
        assert tender == [code_of[fact.answer]], (subject, tender, fact.aliases)
