"""The lm-eval side: tasks load through TaskManager, and AdaptationTask scores every condition of a trace."""
import hashlib
import json
import os
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

import kvinject.metrics
from kvinject.adaptation_tasks.adaptation_math import data as math_data
from kvinject.adaptation_tasks.adaptation_math.mawps_sources import SOURCE_ENV_VAR
from kvinject.adaptation_tasks.docs import MalformedDocError

TASKS_DIR = Path(kvinject.adaptation_tasks.__file__).parent
MAWPS_SOURCE = os.environ.get(SOURCE_ENV_VAR)


@pytest.fixture(scope="module")
def task_manager():
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


@pytest.fixture(scope="module")
def semantic_task(task_manager):
    return task_manager.load(["adaptation_semantic"])["tasks"]["adaptation_semantic"]


def test_index_lists_both_tasks_and_the_group(task_manager):
    assert {"adaptation", "adaptation_math", "adaptation_semantic"} <= set(task_manager.all_tasks)
    assert "adaptation" in task_manager.all_groups


def test_semantic_task_loads_500_docs(semantic_task):
    docs = list(semantic_task.test_docs())
    assert type(semantic_task).__name__ == "AdaptationTask" and len(docs) == 500
    assert sum(doc["variation_type"] == "identical" for doc in docs) == 120
    for doc in docs[:20]:
        assert doc["original_question"] in semantic_task.doc_to_text(doc)
    assert semantic_task.config.generation_kwargs["do_sample"] is False


@pytest.mark.skipif(not MAWPS_SOURCE, reason=f"{SOURCE_ENV_VAR} is not set (CI points it at ../shared/data/mawps/svamp/cv_mawps)")
def test_math_task_loads_500_docs(task_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("KVINJECT_CACHE", str(tmp_path))
    task = task_manager.load(["adaptation_math"])["tasks"]["adaptation_math"]
    docs = list(task.test_docs())
    counts = {kind: sum(d["variation_type"] == kind for d in docs) for kind in ("identical", "single_number", "multiple_numbers", "added_step")}
    assert counts == {"identical": 120, "single_number": 127, "multiple_numbers": 127, "added_step": 126}
    assert all(doc["original_question"] in task.doc_to_text(doc) for doc in docs)


def test_the_task_config_records_the_dataset_source_and_hash(semantic_task):
    """lm-eval writes the task config into the results JSON: where the docs came from, and their hash."""
    docs = json.dumps(list(semantic_task.eval_docs), sort_keys=True, ensure_ascii=False, default=str)
    record = {"source": "kvinject.adaptation_tasks.adaptation_semantic.data.load_semantic_dataset",
              "sha256": hashlib.sha256(docs.encode("utf-8")).hexdigest()}
    assert semantic_task.dump_config()["metadata"]["dataset"] == record


@pytest.mark.skipif(not MAWPS_SOURCE, reason=f"{SOURCE_ENV_VAR} is not set (CI points it at ../shared/data/mawps/svamp/cv_mawps)")
def test_the_math_source_may_come_from_the_task_metadata(tmp_path, monkeypatch):
    """--metadata '{"mawps_source": ...}' wins over the environment variable, and is recorded."""
    monkeypatch.setenv(SOURCE_ENV_VAR, str(tmp_path / "nowhere"))
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"mawps_source": MAWPS_SOURCE})
    task = manager.load(["adaptation_math"])["tasks"]["adaptation_math"]
    assert len(list(task.test_docs())) == 500
    assert task.dump_config()["metadata"]["dataset"]["source"] == MAWPS_SOURCE
    assert math_data.dataset_source({}) == str(tmp_path / "nowhere")


class TracedOutput(str):
    """What KVInjectLM returns: the baseline text carrying its trace (docs/architecture.md section 4)."""

    def __new__(cls, text, trace):
        output = super().__new__(cls, text)
        output.trace = trace
        return output


@pytest.fixture
def fake_metrics(monkeypatch):
    """Stands in for kvinject.metrics' settings and per-doc metrics and records what the task passes to
    them; the metric keys it returns are real ones (metric_higher_is_better, left real, rejects others)."""
    calls = {}

    class Settings:
        @classmethod
        def from_mapping(cls, mapping):
            calls["settings_mapping"] = mapping
            return cls()

    def doc_metrics(trace, answers, settings):
        calls["answers"] = answers
        return {"injection_accuracy@5": 1.0, "stuck_rate@5": 0.0}

    monkeypatch.setattr(kvinject.metrics, "AdaptationSettings", Settings, raising=False)
    monkeypatch.setattr(kvinject.metrics, "doc_metrics", doc_metrics, raising=False)
    monkeypatch.setattr(kvinject.metrics, "metric_aggregation", lambda key, settings: (lambda values: f"agg:{key}"), raising=False)
    return calls


def test_process_results_classifies_every_condition_with_the_yaml_matcher(task_manager, fake_metrics):
    task = task_manager.load(["adaptation_semantic"])["tasks"]["adaptation_semantic"]
    doc = next(d for d in task.test_docs() if d["question_type"] == "country_capital" and d["variation_type"] != "identical")
    old, new = doc["original_answer"], doc["alternative_answer"]
    conditions = {"baseline": f" {old}", "oracle": f" {new}", "injection@5": f" {new}", "noise@5": " no idea"}
    trace = {"conditions": {name: {"text": text} for name, text in conditions.items()}}

    metrics = task.process_results(doc, [TracedOutput(conditions["baseline"], trace)])

    assert metrics == {"injection_accuracy@5": 1.0, "stuck_rate@5": 0.0}
    answers = fake_metrics["answers"]
    assert (answers["baseline"]["new"], answers["baseline"]["old"]) == (False, True)
    assert (answers["injection@5"]["new"], answers["injection@5"]["old"]) == (True, False)
    assert (answers["noise@5"]["new"], answers["noise@5"]["old"]) == (False, False)
    assert fake_metrics["settings_mapping"] == {}
    assert task.aggregation()["injection_accuracy@17"]([1.0]) == "agg:injection_accuracy@17"
    assert task.higher_is_better()["stuck_rate@5"] is False
    assert dict(task.higher_is_better()) == {"injection_accuracy@5": True, "stuck_rate@5": False}


def test_plain_string_output_asks_for_the_kvinject_model(semantic_task):
    doc = next(iter(semantic_task.test_docs()))
    with pytest.raises(TypeError, match="--model kvinject"):
        semantic_task.process_results(doc, ["Paris"])


def test_math_matcher_is_the_one_named_in_the_yaml(task_manager, monkeypatch, tmp_path):
    monkeypatch.setenv(SOURCE_ENV_VAR, str(Path(__file__).parent / "fixtures" / "tasks" / "svamp_cv"))
    monkeypatch.setenv("KVINJECT_CACHE", str(tmp_path))
    from kvinject.adaptation_tasks.adaptation_math.mawps_builder import SetSpec, build_augmented_set

    monkeypatch.setattr(math_data, "build_augmented_set", lambda problems: build_augmented_set(problems, SetSpec(8, 2)))
    task = task_manager.load(["adaptation_math"])["tasks"]["adaptation_math"]
    assert task.answer_matcher.__name__ == "match_math_answer"
    doc = next(iter(task.test_docs()))
    assert task.answer_matcher(f"\\boxed{{{doc['alternative_answer']}}}", doc)["new"]


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.pop("original_answer"), "original_answer"),
        (lambda d: d.update(alternative_question=""), "alternative_question"),
        (lambda d: d.update(alternative_answer="twelve"), "alternative_answer"),
        (lambda d: d.update(variation_type="doubled"), "variation_type"),
    ],
)
def test_malformed_math_doc_names_doc_and_field(change, field, monkeypatch):
    doc = {
        "id": "mawps-x1", "source_id": "x1", "variation_type": "single_number",
        "original_question": "Tom has 2 pens. How many?", "alternative_question": "Tom has 3 pens. How many?",
        "original_equation": "2", "alternative_equation": "3", "original_answer": "2", "alternative_answer": "3",
        "changed_numbers": [{"original": "2", "alternative": "3"}], "added_sentence": "",
    }
    monkeypatch.setattr(math_data, "augmented_math_set", lambda source: [doc])
    math_data.load_math_dataset()  # the intact doc loads
    change(doc)
    with pytest.raises(MalformedDocError, match=f"'mawps-x1'.*'{field}'"):
        math_data.load_math_dataset()


def test_malformed_semantic_doc_names_doc_and_field(semantic_task):
    from kvinject.adaptation_tasks.adaptation_semantic.data import SEMANTIC_SCHEMA
    from kvinject.adaptation_tasks.docs import validate_doc

    doc = dict(next(iter(semantic_task.test_docs())), alternative_aliases=[])
    with pytest.raises(MalformedDocError, match=f"'{doc['id']}'.*'alternative_aliases'"):
        validate_doc(doc, SEMANTIC_SCHEMA, 0)
    with pytest.raises(MalformedDocError, match="position 3.*'id'"):
        validate_doc({"variation_type": "identical"}, SEMANTIC_SCHEMA, 3)
