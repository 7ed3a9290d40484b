"""Build the adaptation_update docs: made-up facts, a question answered from them, and an update.

Each doc is drawn from a seeded ``random.Random``: three facts (a person and the city they live in, a
coloured box and how many things it holds, an item and its price), a question answered from them, and an
update stated in plain words ("Update: Anna now lives in Paris."). A lookup's three facts are of three
kinds, so the question picks its fact by kind (the lookup stays simple for a small model); a sum or
comparison reads the two facts of one kind among its three. The alternative problem is the context with
the update applied, so the oracle reads the updated facts from the start.

Variation types (counts in ``QUOTAS``):
  changed_value   the asked-for fact gets a new value          "Update: Anna now lives in Paris."
  changed_entity  the question moves to another fact            "Update: the question is now: How much does a pen cost?"
  two_step        a value that a sum or comparison uses changes "Update: the red box now holds 9 marbles."
  identical       the update restates the asked fact (or the question) unchanged: the control
A new value is one no fact of the context has, so the old and new answers cannot be confused; a
comparison's new value flips it. Nothing is drawn from outside data.
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

NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Julia", "Kevin", "Laura", "Mark",
         "Nina", "Oscar", "Paula", "Simon", "Tina", "Victor", "Wendy", "Zoe")
CITIES = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Berlin", "Madrid", "Dublin", "Vienna", "Prague",
          "Athens", "Lisbon", "Warsaw", "Moscow", "Delhi", "Seoul", "Sydney", "Boston", "Chicago", "Toronto",
          "London", "Milan", "Munich", "Nairobi", "Havana", "Bangkok", "Istanbul", "Mexico City", "Amsterdam")
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "pink")
THINGS = ("marbles", "apples", "pens", "coins", "shells", "stamps", "cards", "buttons")
ITEMS = ("pen", "cup", "book", "hat", "lamp", "bag", "clock", "mug", "shirt", "ball", "kite", "plate")
NUMBERS = tuple(map(str, range(2, 10)))  # small numbers: the sums stay within what a small model adds


@dataclass(frozen=True)
class Context:
    """The facts of one doc: (domain, entity, value) each, and what the boxes hold.

    A lookup's context has one fact of each domain (a person's city, a box's count, an item's price), so
    the question picks its fact by kind; a sum or comparison's has two facts of one numeric domain and a
    city fact."""

    facts: tuple[tuple[str, str, str], ...]
    things: str

    def value_of(self, entity: str) -> str:
        return next(value for _, e, value in self.facts if e == entity)

    def domain_of(self, entity: str) -> str:
        return next(domain for domain, e, _ in self.facts if e == entity)

    def with_value(self, entity: str, value: str) -> "Context":
        return Context(tuple((d, e, value if e == entity else v) for d, e, v in self.facts), self.things)


def fact(context: Context, entity: str, value: str, now: bool = False) -> str:
    """The sentence stating one fact; with ``now`` the update's wording ("... now lives in ...")."""
    now_word = "now " if now else ""
    domain = context.domain_of(entity)
    if domain == "city":
        return f"{entity} {now_word}lives in {value}."
    if domain == "count":
        return f"The {entity} box {now_word}holds {value} {context.things}."
    return f"A {entity} {now_word}costs {value} dollars."


def question(context: Context, kind: str, asked: tuple[str, ...]) -> str:
    """The question text for a lookup, sum or comparison over the `asked` entities of `context`."""
    domain = context.domain_of(asked[0])
    if kind == "lookup":
        (entity,) = asked
        return {"city": f"Where does {entity} live?",
                "count": f"How many {context.things} does the {entity} box hold?",
                "price": f"How much does a {entity} cost?"}[domain]
    first, second = asked
    if kind == "sum":
        return {"count": f"How many {context.things} do the {first} box and the {second} box hold together?",
                "price": f"How much do a {first} and a {second} cost together?"}[domain]
    return {"count": f"Which box holds more {context.things}, the {first} box or the {second} box?",
            "price": f"Which costs more, a {first} or a {second}?"}[domain]


def problem_text(context: Context, kind: str, asked: tuple[str, ...]) -> str:
    """The problem as it appears in the prompt: the facts, then the question."""
    facts = " ".join(fact(context, entity, value) for _, entity, value in context.facts)
    return f"Facts: {facts}\nQuestion: {question(context, kind, asked)}"


def answer(context: Context, kind: str, asked: tuple[str, ...]) -> str:
    """The gold answer: a city, a whole number, or (comparisons) the colour or item named."""
    if kind == "lookup":
        return context.value_of(asked[0])
    values = [int(context.value_of(entity)) for entity in asked]
    if kind == "sum":
        return str(sum(values))
    return asked[0] if values[0] > values[1] else asked[1]


def _entities(rng: random.Random, domain: str, n: int) -> list[str]:
    return rng.sample({"city": NAMES, "count": COLOURS, "price": ITEMS}[domain], n)


def _lookup_context(rng: random.Random) -> Context:
    """One fact of each domain, in a random order; the two numbers differ."""
    numbers = rng.sample(NUMBERS, 2)
    facts = [("city", _entities(rng, "city", 1)[0], rng.choice(CITIES)),
             ("count", _entities(rng, "count", 1)[0], numbers[0]),
             ("price", _entities(rng, "price", 1)[0], numbers[1])]
    rng.shuffle(facts)
    return Context(tuple(facts), rng.choice(THINGS))


def _two_number_context(rng: random.Random, domain: str) -> Context:
    """Two facts of one numeric domain (distinct values: comparisons never tie) and a city fact."""
    facts = [(domain, entity, value) for entity, value in zip(_entities(rng, domain, 2), rng.sample(NUMBERS, 2))]
    facts.insert(rng.randrange(3), ("city", _entities(rng, "city", 1)[0], rng.choice(CITIES)))
    return Context(tuple(facts), rng.choice(THINGS))


def _unused_values(context: Context, domain: str) -> list[str]:
    """Values no fact of the context has (so the old and new answers cannot be confused)."""
    used = {value for _, _, value in context.facts}
    return [value for value in (CITIES if domain == "city" else NUMBERS) if value not in used]


def _entity_of(context: Context, domain: str) -> str:
    return next(entity for d, entity, _ in context.facts if d == domain)


def _doc(doc_id: str, variation_type: str, control_of: str, context: Context, kind: str, asked: tuple[str, ...],
         alt_context: Context, alt_asked: tuple[str, ...], update: str) -> dict:
    return {
        "id": doc_id,
        "variation_type": variation_type,
        "control_of": control_of,
        "domain": context.domain_of(asked[0]),
        "question_kind": kind,
        "original_question": problem_text(context, kind, asked),
        "alternative_question": problem_text(alt_context, kind, alt_asked),
        "original_answer": answer(context, kind, asked),
        "alternative_answer": answer(alt_context, kind, alt_asked),
        "update": update,
        # the injected segment (the model adapter uses it instead of its injection_template)
        "injection_text": f"\n{update}\nAnswer:",
    }


def _changed_value(rng, doc_id, domain, identical):
    context = _lookup_context(rng)
    asked = (_entity_of(context, domain),)
    value = context.value_of(asked[0]) if identical else rng.choice(_unused_values(context, domain))
    update = _sentence_case("Update: " + fact(context, asked[0], value, now=True))
    return _doc(doc_id, "identical" if identical else "changed_value", "changed_value", context, "lookup", asked,
                context.with_value(asked[0], value), asked, update)


def _changed_entity(rng, doc_id, domain, identical):
    context = _lookup_context(rng)
    asked = (_entity_of(context, domain),)
    alt_asked = asked if identical else (rng.choice([e for _, e, _ in context.facts if e != asked[0]]),)
    update = "Update: the question is now: " + question(context, "lookup", alt_asked)
    return _doc(doc_id, "identical" if identical else "changed_entity", "changed_entity", context, "lookup", asked,
                context, alt_asked, update)


def _two_step(rng, doc_id, domain, identical):
    kind = rng.choice(("sum", "compare"))
    while True:  # redraw the rare comparison whose values leave no room to flip it (e.g. 2 vs 9)
        context = _two_number_context(rng, domain)
        asked = tuple(entity for d, entity, _ in context.facts if d == domain)
        choices = [(entity, value) for entity in asked for value in _changes(context, kind, asked, entity)]
        if choices:
            break
    changed, value = rng.choice(choices)
    if identical:
        value = context.value_of(changed)
    update = _sentence_case("Update: " + fact(context, changed, value, now=True))
    return _doc(doc_id, "identical" if identical else "two_step", "two_step", context, kind, asked,
                context.with_value(changed, value), asked, update)


def _changes(context: Context, kind: str, asked: tuple[str, ...], entity: str) -> list[str]:
    """New values for `entity` that no fact has and that change the answer (a comparison must flip)."""
    unused = _unused_values(context, context.domain_of(entity))
    if kind == "sum":
        return unused
    other = int(context.value_of(asked[1] if entity == asked[0] else asked[0]))
    above = int(context.value_of(entity)) > other
    return [value for value in unused if (int(value) > other) != above]


def _sentence_case(update: str) -> str:
    """"Update: the red box ...": the fact continues the sentence after the colon."""
    head, _, rest = update.partition(": ")
    return f"{head}: {rest[0].lower()}{rest[1:]}" if rest.startswith(("The ", "A ")) else update


BUILDERS = {"changed_value": _changed_value, "changed_entity": _changed_entity, "two_step": _two_step}


def build_update_docs(seed: int = SEED) -> list[dict]:
    """All docs in a fixed order: each changed type in turn, then the controls, which mirror the three
    types in turn. Within a type the asked domains take turns (two_step: count and price only)."""
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
    extra_text_fields=("control_of", "domain", "question_kind", "update", "injection_text"),
)


def load_update_dataset(seed: int = SEED, **_metadata) -> datasets.DatasetDict:
    """lm-eval ``custom_dataset``; ``--metadata '{"seed": N}'`` draws another set of the same design."""
    return validated_test_split(build_update_docs(int(seed)), UPDATE_SCHEMA)


# Worked examples in the answer format the matchers read: restate the facts used, then "So the answer is".
# Their names, boxes and items are outside the pools above, so they never collide with a doc's facts.
INSTRUCTION = (
    "Answer the question from the facts. First repeat the facts you use, then finish with "
    "\"So the answer is <answer>.\""
)
WORKED_EXAMPLES = (
    "Facts: The gold box holds 5 beads. Mia lives in Kyoto. A vase costs 8 dollars.\n"
    "Question: Where does Mia live?\n"
    "Answer: The facts say that Mia lives in Kyoto. So the answer is Kyoto.",
    "Facts: Tom lives in Bern. The gold box holds 4 beads. The silver box holds 3 beads.\n"
    "Question: How many beads do the gold box and the silver box hold together?\n"
    "Answer: The facts say that the gold box holds 4 beads and the silver box holds 3 beads. 4 + 3 = 7. "
    "So the answer is 7.",
    "Facts: A fork costs 6 dollars. Sam lives in Quito. A vase costs 9 dollars.\n"
    "Question: Which costs more, a fork or a vase?\n"
    "Answer: The facts say that a fork costs 6 dollars and a vase costs 9 dollars. 9 is more than 6. "
    "So the answer is the vase.",
)


def doc_to_text(doc: dict) -> str:
    """The prompt: instruction, worked examples, the doc's facts and question, and "Answer:"."""
    return "\n\n".join((INSTRUCTION, *WORKED_EXAMPLES, doc["original_question"] + "\nAnswer:"))
