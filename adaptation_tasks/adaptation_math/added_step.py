"""The "added_step" variation: one sentence before the question that changes the very count it asks for.

Only two question shapes qualify, because only there the step is unambiguous and grammatical:
- "How many NOUN do/does/did/will SUBJECT have now/left/in all/in total/altogether?" -> the step says
  SUBJECT gets k more NOUN (or loses k NOUN), with the verb in the question's tense and number;
- "How many NOUN are (now) (there) now/left/in all/in total/altogether?" -> k more NOUN are added (or k NOUN
  are taken away).
Questions about what was grown, picked, earned or needed are left out: "4 more watermelons are added"
does not say whether the added ones were grown. Two-question problems are left out as well.
The step names its subject: a pronoun ("he", "they") is replaced by the one person (or, for "they", the two
people) the story names, and the problem is left out when the story names another number of people. After
a story with "each", "every" or "per", and for a plural subject, the step says "in all", so that "3 more"
cannot be read as 3 more each.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction

_WORD = r"[A-Za-z][a-z]*"
_NOUN_PHRASE = rf"((?:{_WORD} ){{0,2}}?[a-z]+)"  # "dimes", "baseball cards", "pieces of candy"
_ENDING = r"(now|left|in all|in total|altogether)"
_HAVE_QUESTION = re.compile(rf"How many {_NOUN_PHRASE} (do|does|did|will) ((?:the )?{_WORD}) have {_ENDING}\?")
_THERE_QUESTION = re.compile(rf"How many {_NOUN_PHRASE} are (?:now )?(?:there )?{_ENDING}\?")
# words that would make the "noun" something else: a comparison, a pronoun, a verb
_NOT_IN_NOUN = frozenset(
    {"more", "less", "fewer", "of", "times", "many", "much", "do", "does", "did", "will", "he", "she", "they",
     "it", "we", "you", "i", "is", "are", "was", "were", "have", "has", "had", "total", "all"}
)
# verb forms after the question's auxiliary: (gain, loss)
_VERBS = {
    "do": ("get", "lose"),
    "does": ("gets", "loses"),
    "did": ("got", "lost"),
    "will": ("will get", "will lose"),
}
GAIN, LOSS = "+", "-"
_PRONOUNS = {"he": 1, "she": 1, "it": 1, "they": 2}  # how many named people the pronoun must point at
# a named person, not in the possessive ("Cindy's mom baked ..." does not make Cindy the one who acts)
_PERSON = re.compile(r"\b(?:(?:Mr|Mrs|Ms|Dr)\. )?[A-Z][a-z]+\b(?!'s)")
# capitalised words that are no person: sentence openers, pronouns, titles alone, days and feasts
_NOT_A_PERSON = frozenset({
    "There", "The", "A", "An", "After", "Then", "Later", "If", "How", "Each", "Every", "He", "She", "They", "It",
    "His", "Her", "Their", "Its", "In", "On", "At", "For", "When", "During", "Before", "Some", "All", "One", "This",
    "That", "These", "Those", "Mr", "Mrs", "Ms", "Dr", "So", "But", "And", "Now", "Today", "Yesterday", "Last",
    "Next", "Halloween", "Christmas", "Easter", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
    "Saturday", "Sunday", "What", "Of", "With", "To", "As", "From", "Over", "While", "Since", "Altogether",
})
_EACH = re.compile(r"\b(?:each|every|per)\b", re.IGNORECASE)


@dataclass(frozen=True)
class AddedStep:
    sentence: str
    operation: str  # GAIN ("+") or LOSS ("-")
    amount: int


def step_question(story: str, question: str) -> re.Match | None:
    """The question's match when a step can change the count it asks for, else None."""
    if question.lower().count("how many") != 1 or "?" in story:
        return None
    match = _HAVE_QUESTION.fullmatch(question) or _THERE_QUESTION.fullmatch(question)
    if match is None:
        return None
    noun_words = match.group(1).lower().split()
    if set(noun_words) & _NOT_IN_NOUN - {"of"} or noun_words[0] == "of" or noun_words[-1] == "of":
        return None
    # the asked count must be one the story talks about ("plants" vs a story about "bean plans" is not)
    if not re.search(rf"\b{re.escape(noun_words[-1])}\b", story, re.IGNORECASE):
        return None
    return match


def named_subject(subject: str, story: str) -> str | None:
    """The question's subject as the step names it: a name stays, a pronoun becomes the person (two people
    for "they") the story names; None when the story names a different number of people."""
    people = _PRONOUNS.get(subject.lower())
    if people is None:
        return subject
    names = list(dict.fromkeys(name for name in _PERSON.findall(story) if name not in _NOT_A_PERSON))
    if len(names) != people:
        return None
    return " and ".join(names)


def make_step(match: re.Match, answer: Fraction, rng: random.Random, story: str) -> AddedStep | None:
    """A gain for totals, a loss for what is left; "now" may be either. None when a loss would not fit or
    the subject cannot be named."""
    ending = match.group(match.re.groups).lower()
    operation = LOSS if ending == "left" else GAIN if ending != "now" else rng.choice((GAIN, LOSS))
    if operation == LOSS and answer < 4:
        return None
    amount = rng.randint(2, min(20, int(answer) - 2) if operation == LOSS else 20)
    noun = match.group(1)
    in_all = " in all" if _EACH.search(story) else ""
    if match.re is _HAVE_QUESTION:
        subject = named_subject(match.group(3), story)
        if subject is None:
            return None
        if " and " in subject or match.group(3).lower() == "they":
            in_all = " in all"
        gain, loss = _VERBS[match.group(2).lower()]
        verb = f"{gain} {amount} more" if operation == GAIN else f"{loss} {amount}"
        sentence = f"After that, {subject} {verb} {noun}{in_all}."
    else:
        change = "more {noun} are added" if operation == GAIN else "{noun} are taken away"
        sentence = f"After that, {amount} {change.format(noun=noun)}{in_all}."
    return AddedStep(sentence, operation, amount)
