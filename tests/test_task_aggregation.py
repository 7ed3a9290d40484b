"""lm-eval's per-task aggregation, as the start-up hook wraps it: adaptation tasks get one line
instead of the "not scored on the same number of documents" warning and lose p-value keys
without a test; every other task is aggregated and warned about exactly as lm-eval does."""
import logging
from pathlib import Path

import pytest
from lm_eval import evaluator_utils
from lm_eval.api.metrics import mean
from lm_eval.tasks import TaskManager

import kvinject.adaptation_tasks
from kvinject.task_aggregation import COUNT_NOTICE, LM_EVAL_WARNING

TASKS_DIR = Path(kvinject.adaptation_tasks.__file__).parent


@pytest.fixture(scope="module")
def semantic_task():
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    return manager.load(["adaptation_semantic"])["tasks"]["adaptation_semantic"]


@pytest.fixture
def messages():
    """Every message lm-eval's aggregation module logs (at any level) during the test."""
    logger = evaluator_utils.eval_logger
    records = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _uneven_counts():
    return {("baseline_accuracy", "none"): [1.0, 0.0, 1.0], ("n_docs@5", "none"): [1.0, 1.0],
            ("pvalue_oracle_convergence@5", "none"): [{}, {}]}


def test_an_adaptation_task_gets_one_line_instead_of_lm_evals_warning(semantic_task, messages):
    results, _ = evaluator_utils._compute_task_aggregations(semantic_task, _uneven_counts(), 0)
    texts = [record.getMessage() for record in messages]
    assert not any(LM_EVAL_WARNING in text for text in texts), texts
    assert texts.count(COUNT_NOTICE.format(task="adaptation_semantic")) == 1
    assert "n_docs@N" in COUNT_NOTICE and "n_controls@N" in COUNT_NOTICE
    # fewer than two pairs: no test, so no key (it used to read 1.0)
    assert "pvalue_oracle_convergence@5,none" not in results
    assert "pvalue_oracle_convergence@5_stderr,none" not in results
    assert results["n_docs@5,none"] == 2.0


def test_other_tasks_keep_lm_evals_warning(messages):
    class OtherTask:
        task_name = "someone_elses_task"

        @staticmethod
        def aggregation():
            return {"acc": mean, "f1": mean}

    raw = {("acc", "none"): [1.0, 0.0, 1.0], ("f1", "none"): [0.5, 0.5]}
    results, _ = evaluator_utils._compute_task_aggregations(OtherTask(), raw, 0)
    texts = [record.getMessage() for record in messages]
    assert any(text.startswith(f"[someone_elses_task] {LM_EVAL_WARNING}") for text in texts), texts
    assert not any("kvinject" in text for text in texts)
    assert set(results) == {"acc,none", "acc_stderr,none", "f1,none", "f1_stderr,none"}
