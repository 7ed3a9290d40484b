"""adaptation_update: the seeded build, its counts, every gold re-derived from the text, the updates, the
prompt, the matcher, and (slow) two docs through lm-eval on SmolLM2."""
import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from kvinject.adaptation_tasks.adaptation_update.answers import match_update_answer
from kvinject.adaptation_tasks.adaptation_update.data import (
    N_IDENTICAL,
    QUOTAS,
    SEED,
    UPDATE_SCHEMA,
    build_update_docs,
    doc_to_text,
    load_update_dataset,
)
from kvinject.adaptation_tasks.docs import validate_doc

DOCS = build_update_docs()

# --- an independent reading of the text: facts and questions back into values and answers -------------
FACT_PATTERNS = (
    re.compile(r"^(?P<entity>[A-Z][a-z]+) (?:now )?lives in (?P<value>[A-Z][A-Za-z ]+)\.$"),
    re.compile(r"^[Tt]he (?P<entity>[a-z]+) box (?:now )?holds (?P<value>\d+) [a-z]+\.$"),
    re.compile(r"^[Aa] (?P<entity>[a-z]+) (?:now )?costs (?P<value>\d+) dollars\.$"),
)
QUESTION_PATTERNS = (
    ("lookup", re.compile(r"^Where does (?P<a>[A-Z][a-z]+) live\?$")),
    ("lookup", re.compile(r"^How many [a-z]+ does the (?P<a>[a-z]+) box hold\?$")),
    ("lookup", re.compile(r"^How much does a (?P<a>[a-z]+) cost\?$")),
    ("sum", re.compile(r"^How many [a-z]+ do the (?P<a>[a-z]+) box and the (?P<b>[a-z]+) box hold together\?$")),
    ("sum", re.compile(r"^How much do a (?P<a>[a-z]+) and a (?P<b>[a-z]+) cost together\?$")),
    ("compare", re.compile(r"^Which box holds more [a-z]+, the (?P<a>[a-z]+) box or the (?P<b>[a-z]+) box\?$")),
    ("compare", re.compile(r"^Which costs more, a (?P<a>[a-z]+) or a (?P<b>[a-z]+)\?$")),
)


def read_fact(sentence):
    for pattern in FACT_PATTERNS:
        match = pattern.match(sentence)
        if match:
            return match["entity"], match["value"]
    raise AssertionError(f"not a fact sentence: {sentence!r}")


def read_problem(text):
    """({entity: value}, question kind, asked entities) from 'Facts: ...\\nQuestion: ...'."""
    facts_line, question_line = text.split("\n")
    assert facts_line.startswith("Facts: ") and question_line.startswith("Question: ")
    sentences = re.findall(r"[^.]+\.", facts_line[len("Facts: "):])
    facts = dict(read_fact(sentence.strip()) for sentence in sentences)
    assert len(facts) == len(sentences), "an entity is stated twice"
    return facts, *read_question(question_line[len("Question: "):])


def read_question(question):
    for kind, pattern in QUESTION_PATTERNS:
        match = pattern.match(question)
        if match:
            return kind, [entity for entity in match.groups() if entity]
    raise AssertionError(f"not a question: {question!r}")


def solve(text):
    facts, kind, asked = read_problem(text)
    assert all(entity in facts for entity in asked), (asked, facts)
    if kind == "lookup":
        return facts[asked[0]]
    first, second = (int(facts[entity]) for entity in asked)
    if kind == "sum":
        return str(first + second)
    assert first != second
    return asked[0] if first > second else asked[1]


def apply_update(text, update):
    """The problem with the update applied: a fact gets its new value, or the question is replaced."""
    facts_line, question_line = text.split("\n")
    body = update.removeprefix("Update: ")
    if body.startswith("the question is now: "):
        return f"{facts_line}\nQuestion: {body.removeprefix('the question is now: ')}"
    entity, value = read_fact(body)
    sentences = [sentence.strip() for sentence in re.findall(r"[^.]+\.", facts_line[len("Facts: "):])]
    hits = [i for i, sentence in enumerate(sentences) if read_fact(sentence)[0] == entity]
    assert len(hits) == 1, f"the update names {entity!r}, which the facts state {len(hits)} times"
    old_value = read_fact(sentences[hits[0]])[1]
    sentences[hits[0]] = sentences[hits[0]].replace(f" {old_value} ", f" {value} ").replace(f" {old_value}.", f" {value}.")
    return "Facts: " + " ".join(sentences) + "\n" + question_line


# --- tests ---------------------------------------------------------------------------------------------
def test_the_same_seed_builds_the_same_docs_and_another_seed_others():
    assert build_update_docs(SEED) == DOCS
    other = build_update_docs(SEED + 1)
    assert len(other) == len(DOCS) and other != DOCS
    assert [d["id"] for d in other] == [d["id"] for d in DOCS]  # ids name the position, not the draw


def test_counts_per_type_and_24_percent_controls():
    counts = Counter(doc["variation_type"] for doc in DOCS)
    assert len(DOCS) == 500 and len({doc["id"] for doc in DOCS}) == 500
    assert counts == {"identical": N_IDENTICAL, **QUOTAS} and N_IDENTICAL / len(DOCS) == 0.24
    assert dict(Counter(d["control_of"] for d in DOCS if d["variation_type"] == "identical")) == {
        "changed_value": 40, "changed_entity": 40, "two_step": 40}
    for name in QUOTAS:  # every domain (two_step: the numeric ones) takes part in every changed type
        domains = Counter(doc["domain"] for doc in DOCS if doc["variation_type"] == name)
        assert set(domains) == ({"count", "price"} if name == "two_step" else {"city", "count", "price"})
        assert max(domains.values()) - min(domains.values()) <= 1
    kinds = Counter(doc["question_kind"] for doc in DOCS if doc["variation_type"] == "two_step")
    assert set(kinds) == {"sum", "compare"}


def test_every_gold_is_recomputed_from_the_problem_text():
    for doc in DOCS:
        assert solve(doc["original_question"]) == doc["original_answer"], doc["id"]
        assert solve(doc["alternative_question"]) == doc["alternative_answer"], doc["id"]


def test_the_alternative_is_the_original_with_the_update_applied_and_changes_the_answer():
    for doc in DOCS:
        assert apply_update(doc["original_question"], doc["update"]) == doc["alternative_question"], doc["id"]
        assert doc["injection_text"] == f"\n{doc['update']}\nAnswer:"
        if doc["variation_type"] != "identical":
            assert doc["alternative_answer"] != doc["original_answer"], doc["id"]
            facts, kind, _ = read_problem(doc["original_question"])
            if kind == "lookup":  # the new answer is no value of the original context: old and new never blur
                assert doc["alternative_answer"] not in facts.values() or doc["variation_type"] == "changed_entity"


def test_identical_controls_restate_a_fact_or_the_question_of_their_context():
    controls = [doc for doc in DOCS if doc["variation_type"] == "identical"]
    for doc in controls:
        facts, kind, asked = read_problem(doc["original_question"])
        body = doc["update"].removeprefix("Update: ")
        if doc["control_of"] == "changed_entity":
            assert body == "the question is now: " + doc["original_question"].split("\nQuestion: ")[1]
        else:
            entity, value = read_fact(body)
            assert " now " in body and facts[entity] == value and entity in asked, doc["id"]
        assert doc["alternative_question"] == doc["original_question"]
        assert doc["alternative_answer"] == doc["original_answer"]


def test_changed_updates_state_a_new_value_of_a_fact_the_question_uses():
    for doc in DOCS:
        if doc["variation_type"] in ("changed_value", "two_step"):
            facts, _, asked = read_problem(doc["original_question"])
            entity, value = read_fact(doc["update"].removeprefix("Update: "))
            assert entity in asked and facts[entity] != value and value not in facts.values(), doc["id"]
        elif doc["variation_type"] == "changed_entity":
            _, _, asked = read_problem(doc["original_question"])
            _, _, new_asked = read_problem(doc["alternative_question"])
            assert new_asked != asked


def test_the_docs_pass_the_contract_and_the_prompt_holds_the_problem_once():
    dataset = load_update_dataset()["test"]
    assert len(dataset) == 500 and dataset[0] == DOCS[0]
    for position, doc in enumerate(DOCS):
        validate_doc(doc, UPDATE_SCHEMA, position)
        prompt = doc_to_text(doc)
        # the adapter swaps the last occurrence: the worked examples must not contain the problem
        assert prompt.count(doc["original_question"]) == 1 and prompt.endswith(doc["original_question"] + "\nAnswer:")
    assert build_update_docs(7) == load_update_dataset(seed="7")["test"].to_list()


def test_lm_eval_loads_the_task_in_the_adaptation_group():
    from kvinject.adaptation_tasks.adaptation_update.measure_card import load_task

    task = load_task()
    assert type(task).__name__ == "AdaptationTask" and list(task.test_docs()) == DOCS
    assert task.doc_to_text(DOCS[3]) == doc_to_text(DOCS[3])
    assert task.answer_matcher is match_update_answer
    assert task.config.generation_kwargs["do_sample"] is False and "Question:" in task.config.generation_kwargs["until"]
    import yaml
    from lm_eval.tasks import TaskManager

    from kvinject.adaptation_tasks import TASKS_DIR

    assert "adaptation_update" in TaskManager(include_path=str(TASKS_DIR), include_defaults=False).all_tasks
    assert "adaptation_update" in yaml.safe_load((TASKS_DIR / "adaptation.yaml").read_text())["task"]


@pytest.mark.parametrize("text, new, old", [
    ("The facts say that Anna lives in Paris. So the answer is Paris.", True, False),
    ("The facts say that Anna lives in Rome. So the answer is Rome.", False, True),
    ("Anna lives in Rome.\nUpdate: ...\nThe facts say that Anna lives in Paris. So the answer is Paris.", True, False),
    ("The facts say that Anna lives in Paris.", True, False),
    ("So the answer is Paris, not Rome.", True, False),
    ("I do not know.", False, False),
])
def test_city_answers_are_read_from_the_last_answer_sentence(text, new, old):
    result = match_update_answer(text, {"original_answer": "Rome", "alternative_answer": "Paris"})
    assert (result["new"], result["old"]) == (new, old)


@pytest.mark.parametrize("text, new, old", [
    ("The red box holds 4 pens and the blue box holds 5 pens. 4 + 5 = 9. So the answer is 9.", True, False),
    ("So the answer is 4 + 3 = 7.", False, True),
    ("So the answer is 9 pens.", True, False),
    ("So the answer is 12.", False, False),
])
def test_number_answers_are_read_from_the_last_answer_sentence(text, new, old):
    result = match_update_answer(text, {"original_answer": "7", "alternative_answer": "9"})
    assert (result["new"], result["old"]) == (new, old)


@pytest.mark.parametrize("text, new, old", [
    ("The facts say that the blue box holds 4 pens. So the answer is 4.", False, True),
    ("The facts say that Tina lives in Moscow. So the answer is Moscow.", True, False),
    ("So the answer is 4 dollars.", False, True),
])
def test_a_question_moved_to_another_kind_reads_each_gold_by_its_own_kind(text, new, old):
    """changed_entity can move the question from a count to a city: one number gold, one name gold."""
    result = match_update_answer(text, {"original_answer": "4", "alternative_answer": "Moscow"})
    assert (result["new"], result["old"]) == (new, old)


def test_every_doc_can_be_scored():
    for doc in DOCS:
        stated = f"So the answer is {doc['alternative_answer']}."
        assert match_update_answer(stated, doc)["new"], doc["id"]
        assert match_update_answer(stated, doc)["old"] == (doc["variation_type"] == "identical"), doc["id"]


def test_the_model_adapter_injects_the_docs_own_update():
    from kvinject.model_adapters.harness_model import problem_from_request
    from kvinject.model_adapters.model_args import parse_model_args

    doc = DOCS[0]
    context = doc_to_text(doc)
    gen_kwargs = {"until": ["\n\n"], "max_gen_toks": 64}
    inline = problem_from_request(parse_model_args({}), "adaptation_update", doc, context, gen_kwargs)
    assert inline.injection_text == doc["injection_text"]
    assert inline.alternative_prompt == context.replace(doc["original_question"], doc["alternative_question"])
    user = problem_from_request(parse_model_args({"injection_turn": "user"}), "adaptation_update", doc, context,
                                gen_kwargs, ("<end>\n<user>\n", "<end>\n<assistant>\n"))
    assert user.injection_text == f"<end>\n<user>\n{doc['update']}\nAnswer:<end>\n<assistant>\n"


@pytest.mark.slow
def test_two_docs_run_end_to_end_on_smollm2_with_the_chat_template(tmp_path):
    """lm-eval renders the prompt with SmolLM2's chat template, the model adapter injects each doc's update,
    the task scores every condition; the card's measuring script renders the same prompts."""
    from kvinject.adaptation_tasks.adaptation_update import measure_card
    from kvinject.model_adapters.trace_log import read_traces

    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "kvinject", "--model_args",
         "pretrained=smollm2-135m,injection_points=5:10,device=cpu", "--tasks", "adaptation_update", "--limit", "2",
         "--apply_chat_template", "--output_path", str(out), "--log_samples"],
        capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ), timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["adaptation_update"]
    values = {key.split(",")[0]: value for key, value in results.items()}
    assert 0 <= values["baseline_accuracy"] <= 1 and 0 <= values["oracle_accuracy"] <= 1
    records = read_traces(next(out.rglob("traces_*.jsonl.gz")))
    assert [record["trace"]["doc_id"] for record in records] == [DOCS[0]["id"], DOCS[1]["id"]]

    from transformers import AutoTokenizer

    from kvinject.model_adapters.offline_models import OFFLINE_MODELS, safetensors_copy_of_gguf

    tokenizer = AutoTokenizer.from_pretrained(safetensors_copy_of_gguf(OFFLINE_MODELS["smollm2-135m"].gguf_path()))
    rendered = measure_card.requests(measure_card.load_task(), [0, 1], True, tokenizer)
    for record, instance, doc in zip(records, rendered, DOCS):
        trace = record["trace"]
        assert trace["prompts"]["original"]["text"] == instance.args[0]
        assert trace["prompts"]["original"]["ids"][0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
        injected = trace["conditions"]["injection@5"]
        if injected["injected"]:
            assert injected["injected_text"] == doc["injection_text"]


def test_the_card_script_counts_a_doc_injected_at_n_only_after_more_than_n_tokens(tmp_path):
    from kvinject.adaptation_tasks.adaptation_update import measure_card

    def record(doc_id, variation_type, tokens, base_ok, oracle_ok):
        return {"id": doc_id, "variation_type": variation_type, "baseline": {"n_tokens": tokens, "correct": base_ok},
                "oracle": {"n_tokens": 9, "correct": oracle_ok}}

    records = [record("a", "changed_value", 5, True, False), record("b", "two_step", 6, False, True),
               record("c", "identical", 2, True, True), record("d", "changed_entity", 16, True, True)]
    summary = measure_card.summarise(records, [5, 15])
    assert summary["all"]["baseline_accuracy"] == 0.75 and summary["all"]["oracle_accuracy"] == 0.75
    # the engine injects at N iff the baseline did not stop at or before its N-th token; controls do not count
    assert summary["all"]["injected_share@5"] == 2 / 3 and summary["all"]["injected_share@15"] == 1 / 3
    assert summary["identical"]["injected_share@5"] is None
    low, high = summary["all"]["baseline_accuracy_ci95"]
    assert low < 0.75 < high
    assert measure_card.shard(list(range(7)), "1/3") == [1, 4]
    assert sorted(sum((measure_card.shard(list(range(7)), f"{i}/3") for i in range(3)), [])) == list(range(7))
    with pytest.raises(ValueError, match="--shard"):
        measure_card.shard([1], "3/3")
    parts = []
    for index, chunk in enumerate((records[:2], records[2:], records[1:2])):
        parts.append(tmp_path / f"part{index}.json")
        parts[-1].write_text(json.dumps({"model": "m", "chat_template": True, "points": [5, 15], "seconds": 1.0,
                                         "command": "x", "records": chunk}))
    assert measure_card.merge(parts[:2])["summary"] == summary
    with pytest.raises(ValueError, match="share docs"):
        measure_card.merge(parts)


def test_the_worked_examples_use_no_entity_or_city_of_the_pools_and_solve_as_they_say():
    from kvinject.adaptation_tasks.adaptation_update import data

    for example in data.WORKED_EXAMPLES:
        problem, worked = example.split("\nAnswer: ")
        facts, _, _ = read_problem(problem)
        assert not set(facts) & set(data.NAMES + data.COLOURS + data.ITEMS)
        assert not set(facts.values()) & set(data.CITIES)
        assert worked.endswith(f"So the answer is {solve(problem)}.") or worked.endswith(f"the {solve(problem)}.")
