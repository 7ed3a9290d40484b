"""Build the adaptation_update docs: made-up facts, a question answered from them, and an update.

Each doc is drawn from a seeded ``random.Random``: three facts of one domain (people and the cities
they live in, coloured boxes and how many things they hold, items and their prices), a question about
them, and an update stated in plain words ("Update: Anna now lives in Paris."). The alternative problem
is the context with the update applied, so the oracle reads the updated facts from the start.

Variation types (counts in ``QUOTAS``):
  changed_value   the asked-for fact gets a new value          "Update: Anna now lives in Paris."
  changed_entity  the question moves to another entity          "Update: the question is now: Where does Ben live?"
  two_step        a value that a sum or comparison uses changes "Update: the red box now holds 9 marbles."
  identical       the update restates a fact (or the question) of the context unchanged (the control)
The facts and questions are the only text; nothing is drawn from outside data.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import datasets

from kvinject.adaptation_tasks.docs import DocSchema, validated_test_split

SEED = 2026
# 500 docs, 24% identical controls; the changed types share the rest (largest remainders first).
QUOTAS = {"changed_value": 127, "changed_entity": 127, "two_step": 126}
N_IDENTICAL = 120
DOMAINS = ("city", "count", "price")
NUMBER_DOMAINS = ("count", "price")
# A lookup reads one of two facts; a sum or comparison reads two of three.
N_FACTS = {"lookup": 2, "sum": 3, "compare": 3}

NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Julia", "Kevin", "Laura", "Mark",
         "Nina", "Oscar", "Paula", "Simon", "Tina", "Victor", "Wendy", "Zoe")
CITIES = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Berlin", "Madrid", "Dublin", "Vienna", "Prague",
          "Athens", "Lisbon", "Warsaw", "Moscow", "Delhi", "Seoul", "Sydney", "Boston", "Chicago", "Toronto",
          "London", "Milan", "Munich", "Nairobi", "Havana", "Bangkok", "Istanbul", "Mexico City", "Amsterdam")
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "pink")
THINGS = ("marbles", "apples", "pens", "coins", "shells", "stamps", "cards", "buttons")
ITEMS = ("pen", "cup", "book", "hat", "lamp", "bag", "clock", "mug", "shirt", "ball", "kite", "plate")
COUNT_RANGE = (2, 9)  # small numbers: the sums stay within what a small model adds
PRICE_RANGE = (2, 9)


@dataclass(frozen=True)
class Context:
    """One domain's three facts: entity -> value (cities, or whole numbers as text)."""

    domain: str
    entities: tuple[str, ...]
    values: tuple[str, ...]
    things: str = ""  # what the boxes hold (count domain)

    def value_of(self, entity: str) -> str:
        return self.values[self.entities.index(entity)]

    def with_value(self, entity: str, value: str) -> "Context":
        values = tuple(value if e == entity else v for e, v in zip(self.entities, self.values))
        return Context(self.domain, self.entities, values, self.things)


def fact(context: Context, entity: str, value: str, now: bool = False) -> str:
    """The sentence stating one fact; with ``now`` the update's wording ("... now lives in ...")."""
    now_word = "now " if now else ""
    if context.domain == "city":
        return f"{entity} {now_word}lives in {value}."
    if context.domain == "count":
        return f"The {entity} box {now_word}holds {value} {context.things}."
    return f"A {entity} {now_word}costs {value} dollars."


def question(context: Context, kind: str, asked: tuple[str, ...]) -> str:
    d = context.domain
    if kind == "lookup":
        (entity,) = asked
        return {"city": f"Where does {entity} live?",
                "count": f"How many {context.things} does the {entity} box hold?",
                "price": f"How much does a {entity} cost?"}[d]
    first, second = asked
    if kind == "sum":
        return {"count": f"How many {context.things} do the {first} box and the {second} box hold together?",
                "price": f"How much do a {first} and a {second} cost together?"}[d]
    return {"count": f"Which box holds more {context.things}, the {first} box or the {second} box?",
            "price": f"Which costs more, a {first} or a {second}?"}[d]


def problem_text(context: Context, kind: str, asked: tuple[str, ...]) -> str:
    """The problem as it appears in the prompt: the facts, then the question."""
    facts = " ".join(fact(context, e, v) for e, v in zip(context.entities, context.values))
    return f"Facts: {facts}\nQuestion: {question(context, kind, asked)}"


def answer(context: Context, kind: str, asked: tuple[str, ...]) -> str:
    """The gold answer: a city, a whole number, or (comparisons) the colour or item named."""
    if kind == "lookup":
        return context.value_of(asked[0])
    values = [int(context.value_of(entity)) for entity in asked]
    if kind == "sum":
        return str(sum(values))
    return asked[0] if values[0] > values[1] else asked[1]


def answer_kind(context: Context, kind: str) -> str:
    """"number" when the gold is a whole number, else "text" (as adaptation_pairs: numeric or alias matching)."""
    return "text" if context.domain == "city" or kind == "compare" else "number"


def _new_context(rng: random.Random, domain: str, n_facts: int) -> Context:
    if domain == "city":
        return Context(domain, tuple(rng.sample(NAMES, n_facts)), tuple(rng.sample(CITIES, n_facts)))
    pool, low_high = (COLOURS, COUNT_RANGE) if domain == "count" else (ITEMS, PRICE_RANGE)
    values = rng.sample(range(low_high[0], low_high[1] + 1), n_facts)  # distinct: comparisons never tie
    return Context(domain, tuple(rng.sample(pool, n_facts)), tuple(map(str, values)), rng.choice(THINGS))


def _unused_values(context: Context) -> list[str]:
    """Values that no fact of the context has (so the old and new answers cannot be confused)."""
    if context.domain == "city":
        pool = CITIES
    else:
        low, high = COUNT_RANGE if context.domain == "count" else PRICE_RANGE
        pool = tuple(map(str, range(low, high + 1)))
    return [value for value in pool if value not in context.values]


def _doc(doc_id: str, variation_type: str, control_of: str, context: Context, kind: str, asked: tuple[str, ...],
         alt_context: Context, alt_asked: tuple[str, ...], update: str) -> dict:
    return {
        "id": doc_id,
        "variation_type": variation_type,
        "control_of": control_of,
        "domain": context.domain,
        "question_kind": kind,
        "answer_kind": answer_kind(context, kind),
        "original_question": problem_text(context, kind, asked),
        "alternative_question": problem_text(alt_context, kind, alt_asked),
        "original_answer": answer(context, kind, asked),
        "alternative_answer": answer(alt_context, kind, alt_asked),
        "original_aliases": [answer(context, kind, asked)],
        "alternative_aliases": [answer(alt_context, kind, alt_asked)],
        "update": update,
        # the injected segment (the model adapter uses it instead of its injection_template)
        "injection_text": f"\n{update}\nAnswer:",
    }


def _changed_value(rng, doc_id, domain, identical):
    context = _new_context(rng, domain, N_FACTS["lookup"])
    asked = (rng.choice(context.entities),)
    value = context.value_of(asked[0]) if identical else rng.choice(_unused_values(context))
    alt = context.with_value(asked[0], value)
    update = "Update: " + fact(context, asked[0], value, now=True)
    return _doc(doc_id, "identical" if identical else "changed_value", "changed_value", context, "lookup", asked,
                alt, asked, _capitalised(update))


def _changed_entity(rng, doc_id, domain, identical):
    context = _new_context(rng, domain, N_FACTS["lookup"])
    asked, other = rng.sample(context.entities, 2)
    alt_asked = (asked,) if identical else (other,)
    update = "Update: the question is now: " + question(context, "lookup", alt_asked)
    return _doc(doc_id, "identical" if identical else "changed_entity", "changed_entity", context, "lookup", (asked,),
                context, alt_asked, update)


def _two_step(rng, doc_id, domain, identical):
    kind = rng.choice(("sum", "compare"))
    while True:  # redraw the rare comparison whose values leave no room to flip it (e.g. 2 vs 9)
        context = _new_context(rng, domain, N_FACTS[kind])
        asked = tuple(rng.sample(context.entities, 2))
        choices = [(entity, value) for entity in asked for value in _changes(context, kind, asked, entity)]
        if choices:
            break
    changed, value = rng.choice(choices)
    if identical:
        value = context.value_of(changed)
    alt = context.with_value(changed, value)
    update = "Update: " + fact(context, changed, value, now=True)
    return _doc(doc_id, "identical" if identical else "two_step", "two_step", context, kind, asked, alt, asked,
                _capitalised(update))


def _changes(context: Context, kind: str, asked: tuple[str, ...], entity: str) -> list[str]:
    """New values for `entity` that no fact has and that change the answer (a comparison must flip)."""
    unused = _unused_values(context)
    if kind == "sum":
        return unused
    other = int(context.value_of(asked[1] if entity == asked[0] else asked[0]))
    above = int(context.value_of(entity)) > other
    return [value for value in unused if (int(value) > other) != above]


def _capitalised(update: str) -> str:
    """"Update: The red box ..." reads as a new sentence; keep the colon's next word in sentence case."""
    head, _, rest = update.partition(": ")
    return f"{head}: {rest[0].lower()}{rest[1:]}" if rest.startswith(("The ", "A ")) else update


BUILDERS = {"changed_value": _changed_value, "changed_entity": _changed_entity, "two_step": _two_step}


def build_update_docs(seed: int = SEED) -> list[dict]:
    """All docs in a fixed order: each changed type in turn, then the controls, which mirror the three
    types in turn. Within a type the domains take turns (two_step: count and price only)."""
    rng = random.Random(seed)
    plan = [(name, False, i, i) for name, count in QUOTAS.items() for i in range(count)]
    plan += [(list(BUILDERS)[i % len(BUILDERS)], True, i, i // len(BUILDERS)) for i in range(N_IDENTICAL)]
    docs = []
    for name, identical, i, turn in plan:
        domains = NUMBER_DOMAINS if name == "two_step" else DOMAINS  # sums and comparisons need numbers
        prefix = "identical" if identical else name
        docs.append(BUILDERS[name](rng, f"update-{prefix}-{i:03d}", domains[turn % len(domains)], identical))
    return docs


UPDATE_SCHEMA = DocSchema(
    variation_types=frozenset({"identical", *QUOTAS}),
    extra_text_fields=("control_of", "domain", "question_kind", "answer_kind", "update", "injection_text"),
    list_fields=("original_aliases", "alternative_aliases"),
)


def load_update_dataset(seed: int = SEED, **_metadata) -> datasets.DatasetDict:
    """lm-eval ``custom_dataset``; ``--metadata '{"seed": N}'`` draws another set of the same design."""
    return validated_test_split(build_update_docs(int(seed)), UPDATE_SCHEMA)


# Worked examples in the answer format the matchers read: restate the facts used, then "So the answer is".
# Their names, boxes and items are outside the pools above, so they never collide with a doc's facts.
INSTRUCTION = (
    "Answer the question from the facts. First say what the question asks and repeat the facts you use, then "
    "finish with "
    "\"So the answer is <answer>.\""
)
WORKED_EXAMPLES = (
    "Facts: Tom lives in Bern. Mia lives in Kyoto.\n"
    "Question: Where does Mia live?\n"
    "Answer: The question asks where Mia lives. The facts say that Mia lives in Kyoto. So the answer is Kyoto.",
    "Facts: The gold box holds 4 beads. The silver box holds 3 beads. The grey box holds 8 beads.\n"
    "Question: How many beads do the gold box and the silver box hold together?\n"
    "Answer: The question asks about the gold box and the silver box. The facts say that the gold box holds "
    "4 beads and the silver box holds 3 beads. 4 + 3 = 7. So the answer is 7.",
    "Facts: A fork costs 6 dollars. A vase costs 9 dollars. A sock costs 2 dollars.\n"
    "Question: Which costs more, a fork or a vase?\n"
    "Answer: The question asks about a fork and a vase. The facts say that a fork costs 6 dollars and a vase "
    "costs 9 dollars. 9 is more than 6. So the answer is the vase.",
)


def doc_to_text(doc: dict) -> str:
    """The prompt: instruction, worked examples, the doc's facts and question, and "Answer:"."""
    return "\n\n".join((INSTRUCTION, *WORKED_EXAMPLES, doc["original_question"] + "\nAnswer:"))
