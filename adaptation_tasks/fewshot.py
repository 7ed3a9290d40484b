"""Worked examples for ``--num_fewshot`` (the tasks are zero-shot by default).

Written for kvinject, not drawn from MAWPS or the semantic pairs, so no example can contain an
evaluated question (the model adapter swaps the *last* occurrence of the question in the prompt).
Each example shows the original question with its own worked answer, in the format the answer
matchers read: ``\\boxed{}`` for math, "The answer is ..." for the semantic pairs.
"""

MATH_EXAMPLES = [
    ("A baker made 24 muffins and sold 9 of them. How many muffins are left?",
     "The baker started with 24 muffins and sold 9, so 24 - 9 = 15 are left. The answer is \\boxed{15}."),
    ("Each box holds 6 pencils. How many pencils are in 7 boxes?",
     "Each of the 7 boxes holds 6 pencils, so there are 7 * 6 = 42 pencils. The answer is \\boxed{42}."),
    ("Mia has 35 stickers and shares them equally among 5 friends. How many stickers does each friend get?",
     "35 stickers shared among 5 friends gives 35 / 5 = 7 each. The answer is \\boxed{7}."),
    ("A farmer has 12 cows and buys 8 more. Then he sells 5. How many cows does he have now?",
     "He has 12 + 8 = 20 cows after buying, and 20 - 5 = 15 after selling. The answer is \\boxed{15}."),
]

SEMANTIC_EXAMPLES = [
    ("What is the largest planet in the Solar System?",
     "Jupiter is the largest of the eight planets. The answer is Jupiter."),
    ("Who wrote the play Romeo and Juliet?",
     "The play was written by the English playwright William Shakespeare. The answer is William Shakespeare."),
    ("What is the boiling point of water at sea level in degrees Celsius?",
     "At standard atmospheric pressure water boils at 100 degrees. The answer is 100."),
    ("Which ocean lies between Africa and Australia?",
     "The ocean east of Africa and west of Australia is the Indian Ocean. The answer is the Indian Ocean."),
]


def _samples(examples):
    return [{"original_question": question, "worked_answer": answer} for question, answer in examples]


def math_examples() -> list[dict]:
    """The worked math examples as few-shot samples (``original_question``, ``worked_answer`` with ``\\boxed{}``)."""
    return _samples(MATH_EXAMPLES)


def semantic_examples() -> list[dict]:
    """The worked semantic examples as few-shot samples (``original_question``, ``worked_answer``)."""
    return _samples(SEMANTIC_EXAMPLES)
