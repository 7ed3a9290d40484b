"""Start-up hook that plugs kvinject into lm-eval 0.4.13, which reads no entry points.

``kvinject_autoload.pth`` (installed at the top of site-packages) imports this module at every
interpreter start. It must stay cheap and import only the standard library: it puts a finder on
``sys.meta_path`` that runs a callback right after each of a few lm-eval modules is executed:

- ``lm_eval.api.registry``: register the ``kvinject`` model as a lazy ``"module:Class"`` string. The
  built-in models are imported first, because lm-eval imports them only while its model registry is
  empty: registering ours first would hide ``--model hf``.
- ``lm_eval.tasks.manager``: put our task folder *first* in every TaskManager's ``include_path``, so a
  user's own ``--include_path`` still loads (and may override ours). (Our metrics need no
  registration: AdaptationTask resolves each key's aggregation and direction itself.)
- ``lm_eval.evaluator``: refuse, before any generation, to run an adaptation task with a model that
  cannot inject (it would generate for every doc and only fail at scoring time).
- ``lm_eval.loggers.evaluation_tracker``: copy the run's own trace file beside lm-eval's results file,
  and write results and samples as strict JSON (no NaN / Infinity; kvinject/strict_json.py).
- ``lm_eval.evaluator_utils``: for adaptation tasks only, replace lm-eval's "not scored on the same
  number of documents" warning by one line and leave out p-value keys without a test
  (kvinject/task_aggregation.py).
- ``lm_eval.api.model``: ``--use_cache PATH`` with ``--model kvinject`` uses kvinject's result store at
  ``PATH.kvinject.sqlite`` (keyed by model, settings and doc) instead of lm-eval's request-text cache.

Newer lm-eval versions that read the ``lm_eval.models`` / ``lm_eval.tasks`` entry points themselves
(see setup.cfg) are detected, and the matching hook steps aside. ``KVINJECT_LMEVAL_DISABLE=1`` turns
the hook off; ``python -m kvinject`` installs it regardless.
"""
import importlib.abc
import os
import sys

MODEL_NAME = "kvinject"
MODEL_TARGET = "kvinject.model_adapters.harness_model:KVInjectLM"


def _on_registry(registry):
    if hasattr(registry, "load_plugins"):  # newer lm-eval loads our entry point itself
        return
    import lm_eval.models  # noqa: F401  (built-ins first, see the module docstring)

    if MODEL_NAME not in registry.model_registry:
        registry.model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def _on_task_manager(manager):
    from kvinject.adaptation_tasks import TASKS_DIR

    if hasattr(manager, "discover_plugin_task_paths") or getattr(manager.TaskManager, "_kvinject", False):
        return
    original_init = manager.TaskManager.__init__

    def __init__(self, verbosity=None, include_path=None, *args, **kwargs):
        if include_path is None:
            extra = []
        elif isinstance(include_path, (list, tuple)):
            extra = list(include_path)
        else:
            extra = [include_path]
        paths = [str(TASKS_DIR)] + [p for p in extra if str(p) != str(TASKS_DIR)]
        original_init(self, verbosity, *args, include_path=paths, **kwargs)

    manager.TaskManager.__init__ = __init__
    manager.TaskManager._kvinject = True


def _on_evaluator(evaluator):
    from kvinject.model_guard import refuse_models_that_cannot_inject

    evaluator.evaluate = refuse_models_that_cannot_inject(evaluator.evaluate)


def _on_evaluation_tracker(tracker_module):
    from kvinject.trace_export import copy_run_traces_beside_results

    tracker_class = tracker_module.EvaluationTracker
    tracker_class.save_results_aggregated = copy_run_traces_beside_results(tracker_class.save_results_aggregated)
    _write_strict_json(tracker_class)


def _write_strict_json(tracker_class):
    from kvinject.strict_json import writes_strict_json

    tracker_class.save_results_aggregated = writes_strict_json(tracker_class.save_results_aggregated)
    tracker_class.save_results_samples = writes_strict_json(tracker_class.save_results_samples)


def _on_evaluator_utils(utils_module):
    from kvinject.task_aggregation import adaptation_task_aggregations

    utils_module._compute_task_aggregations = adaptation_task_aggregations(
        utils_module._compute_task_aggregations, utils_module.eval_logger)


def _on_model_api(model_module):
    from kvinject.cache_routing import route_cache_to_result_store

    route_cache_to_result_store(model_module.CachingLM)


_HOOKS = {
    "lm_eval.api.model": _on_model_api,
    "lm_eval.api.registry": _on_registry,
    "lm_eval.tasks.manager": _on_task_manager,
    "lm_eval.evaluator": _on_evaluator,
    "lm_eval.loggers.evaluation_tracker": _on_evaluation_tracker,
    "lm_eval.evaluator_utils": _on_evaluator_utils,
}
_DONE = set()


def _run_hook(name, module):
    if name in _DONE:
        return
    _DONE.add(name)
    try:
        _HOOKS[name](module)
    except Exception as error:  # a broken plugin must not break lm-eval itself
        print(f"[kvinject] start-up hook for {name} failed: {error!r}", file=sys.stderr)


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, wrapped, name):
        self._wrapped, self._name = wrapped, name

    def create_module(self, spec):
        return self._wrapped.create_module(spec)

    def exec_module(self, module):
        self._wrapped.exec_module(module)
        _run_hook(self._name, module)

    def __getattr__(self, attribute):
        return getattr(self._wrapped, attribute)


class _HookFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _HOOKS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _HookedLoader(spec.loader, name)
                return spec
        return None


def install(force=False):
    """Install the hooks; with ``force`` even when ``KVINJECT_LMEVAL_DISABLE`` is set."""
    if os.environ.get("KVINJECT_LMEVAL_DISABLE") and not force:
        return
    if any(isinstance(finder, _HookFinder) for finder in sys.meta_path):
        return
    for name in _HOOKS:  # lm_eval already imported: patch the loaded modules now
        if name in sys.modules:
            _run_hook(name, sys.modules[name])
    sys.meta_path.insert(0, _HookFinder())


install()
