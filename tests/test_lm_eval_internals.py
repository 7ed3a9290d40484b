"""kvinject/lm_eval_internals.py against the installed lm-eval: one test per internal, and the loud
failure of --model kvinject (never of --model hf) when an lm-eval upgrade takes one away."""
import json
import os
import subprocess
import sys
from importlib.metadata import version
from types import SimpleNamespace

import pytest

from kvinject import lm_eval_internals as internals

VERSION = version("lm_eval")


def test_every_internal_is_there_in_the_installed_lm_eval():
    assert list(internals.CHECKS) == [
        "lm_eval.api.registry.model_registry",
        "lm_eval.tasks.manager.TaskManager.__init__",
        "lm_eval.evaluator.evaluate",
        "lm_eval.loggers.evaluation_tracker.EvaluationTracker.save_results_aggregated",
        "lm_eval.loggers.evaluation_tracker.EvaluationTracker.save_results_samples",
        "lm_eval.evaluator_utils._compute_task_aggregations",
        "lm_eval.api.model.CachingLM",
        "lm_eval.tasks._yaml_loader.load_yaml",
        "lm_eval.api.task.ConfigurableTask._aggregation_list",
        "lm_eval.api.task.ConfigurableTask._higher_is_better",
    ]
    internals.check_all()


def test_model_registry_holds_kvinject_beside_the_built_in_models():
    registry = internals.model_registry()
    assert "kvinject" in registry and "hf" in registry


def test_task_manager_finds_our_tasks_beside_a_users_include_path(tmp_path):
    (tmp_path / "mine.yaml").write_text("task: mine\ndataset_path: json\noutput_type: generate_until\n"
                                        "doc_to_text: x\ndoc_to_target: y\n")
    manager = internals.task_manager_class()(include_path=str(tmp_path), include_defaults=False)
    assert {"adaptation_math", "adaptation_semantic", "mine"} <= set(manager.all_tasks)


def test_evaluate_and_save_results_aggregated_carry_the_hooks():
    assert internals.evaluator_module().evaluate.__wrapped__.__module__ == "lm_eval.evaluator"
    saver = internals.evaluation_tracker_class().save_results_aggregated
    assert saver.__wrapped__.__module__ == "lm_eval.loggers.evaluation_tracker"


def test_caching_lm_keeps_the_model_and_forwards_attributes(tmp_path):
    class Model:
        answer = 42

        def set_cache_hook(self, hook):
            self.hook = hook

        def generate_until(self, requests):
            return ["computed"] * len(requests)

    model = Model()
    cached = internals.caching_lm_class()(model, str(tmp_path / "cache.db"))  # not kvinject: lm-eval's own cache
    assert cached.lm is model and cached.answer == 42 and cached.dbdict is not None
    assert cached.generate_until([]) == []  # lm-eval's cached path, served by the model where not cached


def test_load_yaml_resolves_function_tags():
    from kvinject.adaptation_tasks.adaptation_pairs.task import DEFAULTS_YAML

    config = internals.load_yaml()(DEFAULTS_YAML, resolve_func=True, recursive=True)
    assert config["task"] == "adaptation_pairs" and callable(config["class"])


@pytest.mark.parametrize("method", ["aggregation", "higher_is_better"])
def test_metric_tables_are_what_configurable_task_returns(method):
    from lm_eval.api.task import ConfigurableTask

    task = SimpleNamespace()
    aggregation, higher = {"m": "agg"}, {"m": True}
    internals.set_metric_tables(task, aggregation, higher)
    assert getattr(ConfigurableTask, method)(task) is {"aggregation": aggregation, "higher_is_better": higher}[method]


# How each internal could disappear in an lm-eval upgrade (lm-eval itself keeps working: a private
# table is renamed, not dropped). Run in a fresh interpreter before kvinject's hooks are installed.
REMOVALS = {
    "lm_eval.tasks._yaml_loader.load_yaml": "import lm_eval.tasks._yaml_loader as m; del m.load_yaml",
    "lm_eval.api.task.ConfigurableTask._aggregation_list": "rename_table('aggregation', '_aggregation_list')",
    "lm_eval.api.task.ConfigurableTask._higher_is_better": "rename_table('higher_is_better', '_higher_is_better')",
    "lm_eval.api.model.CachingLM.__init__": "import lm_eval.api.model as m; m.CachingLM.__init__ = lambda self, lm, path: None",
    "lm_eval.api.model.CachingLM.__getattr__": "import lm_eval.api.model as m; del m.CachingLM.__getattr__",
    "lm_eval.loggers.evaluation_tracker.EvaluationTracker.save_results_aggregated":
        "import lm_eval.loggers.evaluation_tracker as m; del m.EvaluationTracker.save_results_aggregated",
    "lm_eval.loggers.evaluation_tracker.EvaluationTracker.save_results_samples":
        "import lm_eval.loggers.evaluation_tracker as m; del m.EvaluationTracker.save_results_samples",
    "lm_eval.evaluator_utils._compute_task_aggregations":
        # renamed parameters, not a deletion: lm-eval calls it by its global name
        "import lm_eval.evaluator_utils as m; f = m._compute_task_aggregations; "
        "m._compute_task_aggregations = lambda t, raw, *a, **k: f(t, raw, *a, **k)",
}
PRELUDE = """
import sys
from lm_eval.api.task import ConfigurableTask
import lm_eval.evaluator, lm_eval.api.model, lm_eval.loggers, lm_eval.tasks.manager  # before kvinject's hooks
import lm_eval.config.evaluate_config, lm_eval.tasks._factory, lm_eval.tasks._index  # they hold load_yaml already

def rename_table(method, table):
    original_init = ConfigurableTask.__init__
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        setattr(self, table + "_renamed", getattr(self, table))
    ConfigurableTask.__init__ = __init__
    setattr(ConfigurableTask, method, lambda self: getattr(self, table + "_renamed"))

for removal in sys.argv[1].split("\\n"):
    exec(removal)
from kvinject import _autoload
_autoload.install(force=True)
"""
# lm_eval.simple_evaluate, the API under `lm_eval --model ...`: the CLI itself also reads load_yaml, so
# taking that one away would break lm-eval's CLI before kvinject is reached.
RUN = PRELUDE + """
import json
import lm_eval
from lm_eval.tasks import TaskManager
request = json.loads(sys.argv[2])
include_path = request.pop("include_path", None)
results = lm_eval.simple_evaluate(**request, task_manager=TaskManager(include_path=include_path))
print(json.dumps(results["results"]))
"""


def python(code, *args, cwd):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "KVINJECT_LMEVAL_DISABLE": "1"})


@pytest.mark.parametrize("symbol", list(REMOVALS))
def test_a_missing_internal_stops_model_kvinject_naming_version_and_symbol(symbol, local_model_dir, tmp_path):
    request = {"model": "kvinject", "model_args": {"pretrained": str(local_model_dir), "injection_points": [1]},
               "tasks": ["adaptation_semantic"], "limit": 1, "use_cache": str(tmp_path / "cache")}
    result = python(RUN, REMOVALS[symbol], json.dumps(request), cwd=tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kvinject.lm_eval_internals.LmEvalIncompatible: kvinject cannot run with lm-eval "
                           f"{VERSION}: {symbol}"), result.stderr[-2000:]
    assert "kvinject docs" not in result.stderr  # stopped before any generation


TINY_TASK = """task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""


def test_model_hf_runs_with_every_internal_gone(local_model_dir, tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"question": f"{a} + 1 =", "choices": [str(a + 1), str(a + 2)], "answer": 0})
                            + "\n" for a in range(3)))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_choice.yaml").write_text(TINY_TASK.format(data=data))
    request = {"model": "hf", "model_args": f"pretrained={local_model_dir}", "device": "cpu",
               "tasks": ["tiny_choice"], "limit": 3, "include_path": str(tmp_path / "tasks")}
    result = python(RUN, "\n".join(REMOVALS.values()), json.dumps(request), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = json.loads(result.stdout.strip().splitlines()[-1])["tiny_choice"]["acc,none"]
    assert 0 <= accuracy <= 1
