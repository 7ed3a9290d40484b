"""Every lm-eval internal kvinject relies on, reached from here and only here.

lm-eval 0.4.13 reads no plugin entry points, so the start-up hook (kvinject/_autoload.py) patches a few
of its functions, and the tasks set two private tables. None of that is lm-eval's public API: an
lm-eval upgrade may rename any of it. Each accessor below checks what kvinject assumes and otherwise
raises ``LmEvalIncompatible``, which names the installed lm-eval version and the missing symbol;
tests/test_lm_eval_internals.py checks each one against the installed lm-eval. ``--model kvinject``
calls ``require_hooks`` before it loads anything, so an upgrade fails there, loudly, while ``--model hf``
runs are untouched. Standard library only: the start-up hook imports it.
"""
from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version
from types import SimpleNamespace

SUPPORTED = "lm-eval>=0.4.13,<0.5"


class LmEvalIncompatible(RuntimeError):
    """The installed lm-eval lacks something kvinject needs; the message names the version and the symbol."""


def incompatible(symbol: str, detail: str = "is missing") -> LmEvalIncompatible:
    """The LmEvalIncompatible error for ``symbol`` (``detail``: what is wrong with it), naming the installed lm-eval."""
    return LmEvalIncompatible(
        f"kvinject cannot run with lm-eval {version('lm_eval')}: {symbol} {detail}. kvinject supports "
        f"{SUPPORTED} (its uses of lm-eval internals are listed in kvinject/lm_eval_internals.py)"
    )


def _resolve(module: str, path: str):
    symbol = f"{module}.{path}"
    try:
        found = importlib.import_module(module)
        for part in path.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        raise incompatible(symbol) from None
    return found


def _parameters(function, names: tuple[str, ...], symbol: str):
    """``function`` when its first parameters (after self) are ``names``."""
    params = [p for p in inspect.signature(function).parameters if p != "self"]
    if tuple(params[: len(names)]) != names:
        raise incompatible(f"{symbol}({', '.join(names)})", f"has changed (now takes {', '.join(params)})")
    return function


def model_registry():
    """``lm_eval.api.registry.model_registry``: ``register(name, target="module:Class")`` adds a lazy model."""
    registry = _resolve("lm_eval.api.registry", "model_registry")
    _parameters(registry.register, ("aliases", "target"), "lm_eval.api.registry.model_registry.register")
    return registry


def task_manager_class():
    """``lm_eval.tasks.manager.TaskManager``, whose ``__init__(verbosity, include_path, ...)`` the hook wraps."""
    manager = _resolve("lm_eval.tasks.manager", "TaskManager")
    _parameters(manager.__init__, ("verbosity", "include_path"), "lm_eval.tasks.manager.TaskManager.__init__")
    return manager


def evaluator_module():
    """``lm_eval.evaluator``, whose ``evaluate(lm, task_dict, ...)`` the hook wraps."""
    _parameters(_resolve("lm_eval.evaluator", "evaluate"), ("lm", "task_dict"), "lm_eval.evaluator.evaluate")
    return importlib.import_module("lm_eval.evaluator")


def evaluation_tracker_class():
    """``EvaluationTracker``, whose ``save_results_aggregated(results, samples)`` the hook wraps."""
    tracker = _resolve("lm_eval.loggers.evaluation_tracker", "EvaluationTracker")
    symbol = "lm_eval.loggers.evaluation_tracker.EvaluationTracker.save_results_aggregated"
    _parameters(_resolve("lm_eval.loggers.evaluation_tracker", "EvaluationTracker.save_results_aggregated"),
                ("results", "samples"), symbol)
    return tracker


def evaluation_tracker_samples_saver():
    """``EvaluationTracker.save_results_samples(task_name, samples)``, wrapped to write strict JSON."""
    symbol = "lm_eval.loggers.evaluation_tracker.EvaluationTracker.save_results_samples"
    return _parameters(_resolve("lm_eval.loggers.evaluation_tracker", "EvaluationTracker.save_results_samples"),
                       ("task_name", "samples"), symbol)


def evaluator_utils_module():
    """``lm_eval.evaluator_utils``: its private ``_compute_task_aggregations(task, raw_metrics, ...)``, wrapped
    for adaptation tasks (kvinject/task_aggregation.py), and the ``eval_logger`` it warns on."""
    _parameters(_resolve("lm_eval.evaluator_utils", "_compute_task_aggregations"), ("task", "raw_metrics"),
                "lm_eval.evaluator_utils._compute_task_aggregations")
    _resolve("lm_eval.evaluator_utils", "eval_logger")
    return importlib.import_module("lm_eval.evaluator_utils")


def caching_lm_class():
    """``lm_eval.api.model.CachingLM``: built as ``CachingLM(lm, cache_db)``, the wrapped model in ``.lm``,
    every other attribute forwarded by its own ``__getattr__`` (both replaced for kvinject, cache_routing.py)."""
    caching = _resolve("lm_eval.api.model", "CachingLM")
    _parameters(caching.__init__, ("lm", "cache_db"), "lm_eval.api.model.CachingLM.__init__")
    if "__getattr__" not in vars(caching):
        raise incompatible("lm_eval.api.model.CachingLM.__getattr__")
    return caching


def load_yaml():
    """``lm_eval.tasks._yaml_loader.load_yaml(path, resolve_func=, recursive=)``, lm-eval's YAML reader
    (``!function`` tags and ``include``), used for the pairs task's defaults."""
    loader = _resolve("lm_eval.tasks._yaml_loader", "load_yaml")
    params = inspect.signature(loader).parameters
    if not {"resolve_func", "recursive"} <= set(params):
        raise incompatible("lm_eval.tasks._yaml_loader.load_yaml(path, resolve_func, recursive)", "has changed")
    return loader


_TASK = "lm_eval.api.task.ConfigurableTask"
_METRIC_TABLES = {"aggregation": "_aggregation_list", "higher_is_better": "_higher_is_better"}


def _check_metric_table(method: str) -> None:
    """``ConfigurableTask.<method>()`` returns the private ``self.<table>``, which a task may replace."""
    table = _METRIC_TABLES[method]
    marker = {}
    try:
        found = _resolve("lm_eval.api.task", f"ConfigurableTask.{method}")(SimpleNamespace(**{table: marker}))
    except AttributeError:
        found = None
    if found is not marker:
        raise incompatible(f"{_TASK}.{table}", f"is no longer what {_TASK}.{method}() returns")


def set_metric_tables(task, aggregation: dict, higher_is_better: dict) -> None:
    """Make ``task.aggregation()`` and ``task.higher_is_better()`` return these dicts."""
    for method in _METRIC_TABLES:
        _check_metric_table(method)
    task._aggregation_list, task._higher_is_better = aggregation, higher_is_better


# One check per internal, in the order the hook meets them; the tests run each on its own.
CHECKS = {
    "lm_eval.api.registry.model_registry": model_registry,
    "lm_eval.tasks.manager.TaskManager.__init__": task_manager_class,
    "lm_eval.evaluator.evaluate": evaluator_module,
    "lm_eval.loggers.evaluation_tracker.EvaluationTracker.save_results_aggregated": evaluation_tracker_class,
    "lm_eval.loggers.evaluation_tracker.EvaluationTracker.save_results_samples": evaluation_tracker_samples_saver,
    "lm_eval.evaluator_utils._compute_task_aggregations": evaluator_utils_module,
    "lm_eval.api.model.CachingLM": caching_lm_class,
    "lm_eval.tasks._yaml_loader.load_yaml": load_yaml,
    f"{_TASK}._aggregation_list": lambda: _check_metric_table("aggregation"),
    f"{_TASK}._higher_is_better": lambda: _check_metric_table("higher_is_better"),
}


HOOK_FAILURES = {}  # hooked lm-eval module -> the error its start-up hook raised (kvinject/_autoload.py)


def check_all() -> None:
    """Raise ``LmEvalIncompatible`` for the first internal the installed lm-eval lacks."""
    for check in CHECKS.values():
        check()


def require_hooks() -> None:
    """Raise ``LmEvalIncompatible`` when an internal is missing or a start-up hook could not be installed.
    ``--model kvinject`` calls it before it loads anything (model_adapters/harness_model.py)."""
    check_all()  # imports every hooked module, so each installed hook has run
    for name, error in HOOK_FAILURES.items():
        if isinstance(error, LmEvalIncompatible):
            raise error
        raise incompatible(f"kvinject's start-up hook for {name}", f"failed ({error!r})") from error
