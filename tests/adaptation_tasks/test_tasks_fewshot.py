"""--num_fewshot: hand-written worked examples precede the question, and the injection still works."""
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

import kvinject.adaptation_tasks
from kvinject.adaptation_tasks.adaptation_math.answers import match_math_answer
from kvinject.adaptation_tasks.adaptation_semantic.answers import match_semantic_answer
from kvinject.adaptation_tasks.fewshot import MATH_EXAMPLES, SEMANTIC_EXAMPLES
from kvinject.model_adapters.harness_model import problem_from_request
from kvinject.model_adapters.model_args import parse_model_args

TASKS_DIR = Path(kvinject.adaptation_tasks.__file__).parent


@pytest.fixture(scope="module")
def semantic_task():
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    return manager.load(["adaptation_semantic"])["tasks"]["adaptation_semantic"]


def test_examples_are_answered_in_the_matchers_format():
    for question, answer in MATH_EXAMPLES:
        gold = answer.split("\\boxed{")[1].split("}")[0]
        assert match_math_answer(answer, {"original_answer": gold, "alternative_answer": "-1"})["old"], question
    for question, answer in SEMANTIC_EXAMPLES:
        stated = answer.rsplit("The answer is ", 1)[1].rstrip(".")
        assert match_semantic_answer(answer, {"original_aliases": [stated], "alternative_aliases": ["zzz"]})["old"]


def test_fewshot_prompt_shows_worked_answers_then_the_question(semantic_task):
    task = semantic_task
    doc = next(iter(task.test_docs()))
    prompt = task.fewshot_context(doc, num_fewshot=2)
    for question, answer in SEMANTIC_EXAMPLES[:2]:
        assert f"Question: {question}" in prompt and answer in prompt
    assert prompt.endswith(task.doc_to_text(doc))
    # The adapter swaps only the evaluated question, after the examples.
    args = parse_model_args({})
    problem = problem_from_request(args, "adaptation_semantic", doc, prompt, {"until": ["\n\n"], "max_gen_toks": 32})
    assert problem.alternative_prompt == prompt[: -len(task.doc_to_text(doc))] + task.doc_to_text(
        {**doc, "original_question": doc["alternative_question"]}
    )
