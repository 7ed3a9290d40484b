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

Every lm-eval internal the hooks touch is reached through kvinject/lm_eval_internals.py. A hook that
cannot be installed (an lm-eval upgrade renamed something) does not break lm-eval: its error is kept,
and ``lm_eval_internals.require_hooks`` raises it when ``--model kvinject`` is built, naming the
lm-eval version and the missing symbol; ``--model hf`` runs are untouched. ``KVINJECT_LMEVAL_DISABLE=1`` turns the hook off;
``python -m kvinject`` installs it regardless.
"""
import importlib.abc
import os
import sys

MODEL_NAME = "kvinject"
MODEL_TARGET = "kvinject.model_adapters.harness_model:KVInjectLM"


# Each hook gets the lm-eval module just executed; what it patches it reaches through lm_eval_internals.
def _on_registry(module):
    import lm_eval.models  # noqa: F401  (built-ins first, see the module docstring)

    from kvinject.lm_eval_internals import model_registry

    registry = model_registry()
    if MODEL_NAME not in registry:
        registry.register(MODEL_NAME, target=MODEL_TARGET)


def _on_task_manager(module):
    from kvinject.adaptation_tasks import TASKS_DIR
    from kvinject.lm_eval_internals import task_manager_class

    task_manager = task_manager_class()
    if getattr(task_manager, "_kvinject", False):
        return
    original_init = task_manager.__init__

    def __init__(self, verbosity=None, include_path=None, *args, **kwargs):
        if include_path is None:
            extra = []
        elif isinstance(include_path, (list, tuple)):
            extra = list(include_path)
        else:
            extra = [include_path]
        paths = [str(TASKS_DIR)] + [p for p in extra if str(p) != str(TASKS_DIR)]
        original_init(self, verbosity, *args, include_path=paths, **kwargs)

    task_manager.__init__ = __init__
    task_manager._kvinject = True


def _on_evaluator(module):
    from kvinject.lm_eval_internals import evaluator_module
    from kvinject.model_guard import refuse_models_that_cannot_inject

    evaluator = evaluator_module()
    evaluator.evaluate = refuse_models_that_cannot_inject(evaluator.evaluate)


def _on_evaluation_tracker(module):
    from kvinject.lm_eval_internals import evaluation_tracker_class
    from kvinject.trace_export import copy_run_traces_beside_results

    tracker_class = evaluation_tracker_class()
    tracker_class.save_results_aggregated = copy_run_traces_beside_results(tracker_class.save_results_aggregated)
    _write_strict_json(tracker_class)


def _write_strict_json(tracker_class):
    from kvinject.lm_eval_internals import evaluation_tracker_samples_saver
    from kvinject.strict_json import writes_strict_json

    tracker_class.save_results_aggregated = writes_strict_json(tracker_class.save_results_aggregated)
    tracker_class.save_results_samples = writes_strict_json(evaluation_tracker_samples_saver())


def _on_evaluator_utils(module):
    from kvinject.lm_eval_internals import evaluator_utils_module
    from kvinject.task_aggregation import adaptation_task_aggregations

    utils_module = evaluator_utils_module()
    utils_module._compute_task_aggregations = adaptation_task_aggregations(
        utils_module._compute_task_aggregations, utils_module.eval_logger)


def _on_model_api(module):
    from kvinject.cache_routing import route_cache_to_result_store
    from kvinject.lm_eval_internals import caching_lm_class

    route_cache_to_result_store(caching_lm_class())


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
    except Exception as error:  # kept, not printed: --model hf runs are untouched, --model kvinject stops
        from kvinject.lm_eval_internals import HOOK_FAILURES  # standard library only, like this module

        HOOK_FAILURES[name] = error


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
