"""Build adaptation_tasks/adaptation_semantic/data/semantic_pairs.json from registry packages (run: python -m kvinject.adaptation_tasks.adaptation_semantic.build_pairs).

Each pair asks the same kind of question about two subjects whose short answers cannot be confused:
after normalisation no alias of one answer equals or contains an alias of the other. Subjects with
disputed or several answers are left out. The output is deterministic, so the committed file can be
checked by rebuilding it byte for byte (with the package versions recorded in the file).
"""
from __future__ import annotations

import datetime
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from kvinject.adaptation_tasks.adaptation_semantic.answers import normalise

BUILDER_VERSION = "3"
SEED = 20240611
OUTPUT_PATH = Path(__file__).parent / "data" / "semantic_pairs.json"
SOURCE_PACKAGES = ("babel", "countryinfo", "iso4217", "periodictable", "us")

# question type -> (pairs, identical controls among them): 500 pairs, 120 controls (24%)
QUOTAS = {
    "country_capital": (120, 29),
    "country_currency": (100, 24),
    "element_symbol": (80, 19),
    "atomic_number": (80, 19),
    "element_name": (70, 17),
    "us_state_capital": (50, 12),
}
QUESTION_TEMPLATES = {
    "country_capital": "What is the capital of {place}?",
    "country_currency": "What is the official currency of {place}?",
    "element_symbol": "What is the chemical symbol of {subject}?",
    "atomic_number": "What is the atomic number of {subject}?",
    "element_name": "Which chemical element has the symbol {subject}?",
    "us_state_capital": "What is the capital of the U.S. state of {subject}?",
}
# Disputed or multiple capitals/currencies: two answers, or none that all sources agree on.
EXCLUDED_COUNTRIES = frozenset({
    "Bolivia", "South Africa", "Netherlands", "Sri Lanka", "Côte d'Ivoire", "Ivory Coast", "Benin",
    "Eswatini", "Swaziland", "Israel", "Malaysia", "Tanzania", "Nauru",
})
# Reviewed against each government's own statements, 2026-11 (data/SOURCES.md):
# no capital or a disputed one (Palestine, Western Sahara; Hong Kong and Tokelau have none; the British Indian Ocean
# Territory has no civilian one; Montserrat's Plymouth was abandoned in 1997; the French Southern and
# Antarctic Lands are run from Réunion), no single currency (Zimbabwe), a second name of a listed
# country (Burma = Myanmar).
EXCLUDED_COUNTRIES |= {
    "Palestine", "Western Sahara", "Hong Kong", "Tokelau", "British Indian Ocean Territory", "Montserrat",
    "French Southern and Antarctic Lands", "Zimbabwe", "Burma",
}
EXCLUDED_CAPITALS = frozenset({"Kingston"})  # names two capitals (Jamaica, Norfolk Island)
# Capital moves under way at the review date, so either answer can be defended: Indonesia (Nusantara by law
# since 2022, Jakarta until the presidential decree), Equatorial Guinea (Malabo -> Ciudad de la Paz).
CAPITAL_IN_TRANSITION = frozenset({"Indonesia", "Equatorial Guinea"})
# Currency questions with two defensible answers: a local issue circulates at par beside the ISO currency
# (Jersey, Guernsey and Manx pounds beside sterling, the Faroese króna beside the Danish krone; Scottish
# banknotes are sterling but "Scottish pound" is a common answer).
AMBIGUOUS_CURRENCY = frozenset({"Jersey", "Guernsey", "Isle of Man", "Faroe Islands", "Scotland"})
# Changed after the package's data was written: Nur-Sultan -> Astana (Sept 2022); Bujumbura -> Gitega (Burundi's
# political capital since Jan 2019); Republic of Macedonia -> North Macedonia (Feb 2019).
CAPITAL_CORRECTIONS = {"Kazakhstan": "Astana", "Burundi": "Gitega"}
# Currencies are checked against CLDR's legal tender of each territory on this date (babel's CLDR, the date
# of the pinned iso4217 table): a subject whose countryinfo code differs, or that has two, is left out.
CURRENCY_REVIEW_DATE = datetime.date(2026, 1, 1)
COUNTRY_RENAMES = {"Republic of Macedonia": "North Macedonia"}
# Names read with "the" in a question ("the capital of the Isle of Man")
_NEEDS_ARTICLE = re.compile(
    r"^(?:Isle of|Republic of|Federated States|Democratic Republic|United |Czech Republic|Dominican Republic|"
    r"Central African)|(?:Islands|Philippines|Maldives)$"
)
CAPITAL_ALIASES = {
    "Kyiv": ["Kiev"],
    "Ulaanbaatar": ["Ulan Bator"],
    "Naypyidaw": ["Nay Pyi Taw", "Naypyitaw"],
    "Bern": ["Berne"],
    "Washington, D.C.": ["Washington"],
    "Washington D.C.": ["Washington, D.C.", "Washington"],
    "South Tarawa": ["Tarawa"],
}
# Common English names beyond the ISO 4217 name and the CLDR names (babel): reviewed by hand.
CURRENCY_ALIASES = {
    "USD": ["United States dollar", "U.S. dollar", "American dollar"],
    "GBP": ["pound sterling", "pound"],
    "CNY": ["renminbi", "yuan"],
    "RUB": ["Russian rouble"],
    "XOF": ["CFA franc"],
    "XAF": ["CFA franc"],
    "KRW": ["Korean won"],
    "KGS": ["Kyrgyzstani som"],
    "XCD": ["Eastern Caribbean dollar"],
    "GYD": ["Guyanese dollar"],
    "UZS": ["Uzbek som", "Uzbek sum"],
    "TMT": ["Turkmen manat", "Turkmenistani manat"],
    "NIO": ["córdoba", "Nicaraguan córdoba"],
    "PLN": ["złoty", "Polish złoty"],
}
# ISO codes that are also English words would match ordinary prose, so they are not used as aliases.
WORDLIKE_CODES = frozenset({"ALL", "TOP", "CUP", "MOP", "PEN", "TRY", "SOS", "BOB", "MAD", "GEL", "AMD", "DOP"})
# Element symbols that are English words ("He", "I", "In"...) would match ordinary prose.
WORDLIKE_SYMBOLS = frozenset({"He", "I", "In", "As", "Be", "No", "At", "Am", "Es", "Os", "Se", "Pa", "Ba", "Bi", "Ha"})
ELEMENT_NAME_ALIASES = {"Aluminum": ["Aluminium"], "Sulfur": ["Sulphur"], "Cesium": ["Caesium"]}


@dataclass(frozen=True)
class Fact:
    subject: str
    answer: str
    aliases: tuple[str, ...]  # the answer first, then other accepted spellings


def build_pairs() -> list[dict]:
    """Every question type's quota of pairs (QUOTAS, identical controls included), in one seeded mixed order."""
    facts = collect_facts()
    pairs: list[dict] = []
    for question_type, (count, controls) in QUOTAS.items():
        pairs.extend(_pairs_of_type(question_type, facts[question_type], count, controls))
    # Mixed order, so that lm-eval's --limit takes every question type and some controls.
    random.Random(f"{SEED}:order").shuffle(pairs)
    return pairs


def render_json(pairs: list[dict]) -> str:
    """The output file's text: the builder version, the source packages' versions and the pairs, as indented JSON."""
    document = {
        "builder_version": BUILDER_VERSION,
        "sources": {package: version(package) for package in SOURCE_PACKAGES},
        "pairs": pairs,
    }
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"


def compatible(first: Fact, second: Fact) -> bool:
    """No alias of one answer equals or contains an alias of the other, after normalisation."""
    return all(
        a not in b and b not in a
        for a in map(normalise, first.aliases)
        for b in map(normalise, second.aliases)
    )


def collect_facts() -> dict[str, list[Fact]]:
    """Question type -> candidate facts: country capitals and currencies, element facts and US state capitals."""
    countries = _country_facts()
    elements = _element_facts()
    return {**countries, **elements, "us_state_capital": _state_facts()}


def _country_facts() -> dict[str, list[Fact]]:
    import countryinfo
    import iso4217
    import us

    state_names = {state.name for state in us.states.STATES}
    records = []
    for country in countryinfo.all_countries():
        name = country.name()
        capital = CAPITAL_CORRECTIONS.get(name, country.capital())
        name = COUNTRY_RENAMES.get(name, name)
        if not isinstance(capital, str) or not capital or "/" in capital:
            continue
        if "(" in name or "," in name:  # "Holy See (Vatican City State)" reads badly in a question
            continue
        # "Georgia" also names a U.S. state, which would make "the capital of Georgia" ambiguous
        if name in EXCLUDED_COUNTRIES or name in state_names or capital in EXCLUDED_CAPITALS:
            continue
        records.append((name, capital, country.currencies(), country.iso(2)))
    capital_count = Counter(normalise(capital) for _, capital, _, _ in records)
    capitals, currencies = [], []
    for name, capital, codes, territory in sorted(records):
        if capital_count[normalise(capital)] == 1 and name not in CAPITAL_IN_TRANSITION:
            capitals.append(Fact(name, capital, _spellings([capital, *CAPITAL_ALIASES.get(capital, [])])))
        if _is_current(codes) and name not in AMBIGUOUS_CURRENCY and _legal_tender(territory) == codes:
            code = codes[0]
            currency = iso4217.Currency(code).currency_name
            aliases = [currency, *_english_currency_names(code), *CURRENCY_ALIASES.get(code, [])]
            currencies.append(Fact(name, currency, _spellings(aliases + ([] if code in WORDLIKE_CODES else [code]))))
    return {"country_capital": capitals, "country_currency": currencies}


def _english_currency_names(code: str) -> list[str]:
    """The CLDR English name and its plural ("East Caribbean Dollar", "East Caribbean dollars")."""
    from babel.numbers import get_currency_name

    return [get_currency_name(code, locale="en"), get_currency_name(code, count=2, locale="en")]


def _spellings(names: list[str]) -> tuple[str, ...]:
    """The names with the usual other spellings: St./Saint, "City of X" as X, without apostrophes ("Sanaa"),
    without repeats after normalisation (the first name stays first)."""
    variants = []
    for name in names:
        variants.append(name)
        if name.startswith("City of "):  # "City of San Marino" is usually just "San Marino"
            variants.append(name[len("City of "):])
        for short, long in (("St. ", "Saint "), ("St. ", "Saint-")):
            if name.startswith(short):
                variants.append(long + name[len(short):])
            if name.startswith(long):
                variants += [short + name[len(long):], "St " + name[len(long):]]
    variants += [re.sub(r"['’ʻ]", "", variant) for variant in variants if re.search(r"['’ʻ]", variant)]
    unique: dict[str, str] = {}
    for variant in variants:
        unique.setdefault(normalise(variant), variant)
    return tuple(unique.values())


def _legal_tender(territory: str) -> list[str]:
    """The currencies CLDR lists as legal tender of an ISO 3166 territory on CURRENCY_REVIEW_DATE."""
    from babel.numbers import get_territory_currencies

    return get_territory_currencies(territory, CURRENCY_REVIEW_DATE, tender=True)


def _is_current(codes: list[str]) -> bool:
    """Exactly one ISO 4217 code that is still in the current table."""
    import iso4217

    return len(codes) == 1 and codes[0] in {currency.code for currency in iso4217.Currency}


def _element_facts() -> dict[str, list[Fact]]:
    import periodictable

    symbol_facts, number_facts, name_facts = [], [], []
    for element in periodictable.elements:
        if element.number == 0:  # periodictable's neutron pseudo-element
            continue
        # element names are common nouns: lower case inside a question, capitalised as an answer
        name = element.name.capitalize()
        number_facts.append(Fact(element.name, str(element.number), (str(element.number),)))
        if element.symbol in WORDLIKE_SYMBOLS:
            continue
        symbol_facts.append(Fact(element.name, element.symbol, (element.symbol,)))
        name_facts.append(Fact(element.symbol, name, (name, *ELEMENT_NAME_ALIASES.get(name, []))))
    return {"element_symbol": symbol_facts, "atomic_number": number_facts, "element_name": name_facts}


def _state_facts() -> list[Fact]:
    import us

    return [Fact(state.name, state.capital, _spellings([state.capital])) for state in sorted(us.states.STATES, key=str)]


def _pairs_of_type(question_type: str, facts: list[Fact], count: int, controls: int) -> list[dict]:
    rng = random.Random(f"{SEED}:{question_type}")
    originals = sorted(facts, key=lambda fact: fact.subject)
    rng.shuffle(originals)
    if len(originals) < count:
        raise RuntimeError(f"{question_type}: only {len(originals)} subjects for {count} pairs")
    pairs = []
    for position, original in enumerate(originals[:count]):
        if position < controls:
            alternative = original
        else:
            candidates = [fact for fact in facts if fact.subject != original.subject and compatible(original, fact)]
            alternative = rng.choice(candidates)
        pairs.append(_pair(question_type, original, alternative, identical=position < controls))
    return pairs


def _pair(question_type: str, original: Fact, alternative: Fact, identical: bool) -> dict:
    template = QUESTION_TEMPLATES[question_type]
    kind = "identical" if identical else "changed"
    return {
        "id": f"{question_type}-{kind}-{normalise(original.subject).replace(' ', '_')}",
        "variation_type": "identical" if identical else question_type,
        "question_type": question_type,
        "original_subject": original.subject,
        "alternative_subject": alternative.subject,
        "original_question": template.format(subject=original.subject, place=_place(original.subject)),
        "alternative_question": template.format(subject=alternative.subject, place=_place(alternative.subject)),
        "original_answer": original.answer,
        "alternative_answer": alternative.answer,
        "original_aliases": list(original.aliases),
        "alternative_aliases": list(alternative.aliases),
    }


def _place(name: str) -> str:
    return f"the {name}" if _NEEDS_ARTICLE.search(name) else name


def main() -> None:
    """Build the pairs and write them to OUTPUT_PATH (data/semantic_pairs.json)."""
    OUTPUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT_PATH.write_text(render_json(build_pairs()), encoding="utf-8")
    print(f"wrote {OUTPUT_PATH}")


if __name__ == "__main__":
    main()
