"""Wrappers the start-up hook puts around two lm-eval functions (see kvinject/_autoload.py)."""
import functools
import logging
import re
import shutil
from pathlib import Path


logger = logging.getLogger(__name__)


def _leaf_tasks(task_dict):
    for value in task_dict.values():
        if isinstance(value, dict):
            yield from _leaf_tasks(value)
        else:
            yield value


def guard_evaluate(evaluate):
    """Fail before any generation when an adaptation task meets a model that cannot inject."""

    @functools.wraps(evaluate)
    def checked_evaluate(lm, task_dict, *args, **kwargs):
        from kvinject.adaptation_tasks.task import AdaptationTask
        from kvinject.model_adapters.harness_model import KVInjectLM

        model = getattr(lm, "lm", lm)  # --use_cache wraps the model in a CachingLM
        if not isinstance(model, KVInjectLM):
            names = [t.config.task for t in _leaf_tasks(task_dict) if isinstance(t, AdaptationTask)]
            if names:
                raise ValueError(
                    f"task(s) {', '.join(names)} measure adaptation to a KV-cache injection and need "
                    f"`--model kvinject` (got {type(model).__name__}); use "
                    "`--model kvinject --model_args pretrained=<model>` to evaluate any HF causal LM."
                )
        return evaluate(lm, task_dict, *args, **kwargs)

    return checked_evaluate


def named_callables(value):
    """``value`` with every function replaced by its import path. lm-eval writes a function left in
    a task config (e.g. ``fewshot_config.samples``) as ``str(f)``, which holds a memory address and
    would make two identical runs' results files differ."""
    if isinstance(value, dict):
        return {key: named_callables(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [named_callables(item) for item in value]
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return value


def save_traces_beside_results(save_results_aggregated):
    """After lm-eval writes results_<date>.json, copy the run's trace files next to it."""

    @functools.wraps(save_results_aggregated)
    def save(self, results, samples=None):
        if "configs" in results:
            results = {**results, "configs": named_callables(results["configs"])}
        save_results_aggregated(self, results, samples)
        from kvinject.model_adapters.trace_log import open_trace_logs

        if not self.output_path:
            return
        path = Path(self.output_path)
        folder = path.parent if path.suffix == ".json" else path / str(self.general_config_tracker.model_name_sanitized)
        for index, log in enumerate(open_trace_logs()):
            suffix = "" if index == 0 else f"_{index}"
            log.flush()
            shutil.copyfile(log.path, folder / f"traces_{self.date_id}{suffix}.jsonl")

    return save


def result_store_path_for_cache(cache_db: str) -> str:
    """``--use_cache PATH`` -> ``PATH.kvinject.sqlite``, one file for all ranks (lm-eval names its
    cache ``PATH_rank<N>.db``), so a run can resume with another number of processes."""
    return re.sub(r"_rank\d+\.db$", "", cache_db) + ".kvinject.sqlite"


def route_cache_to_result_store(caching_class):
    """lm-eval's CachingLM keys a response by the request text alone, not by the model, its args or
    the doc (upstream issues #2715, #4063), so it would serve a trace computed under other injection
    settings. For kvinject it becomes a pass-through and the adapter's own result store, keyed by
    everything that changes a trace, does the caching at the path --use_cache names."""
    original_init, original_getattr = caching_class.__init__, caching_class.__getattr__

    def __init__(self, lm, cache_db):
        if not hasattr(lm, "open_result_store"):  # another model: lm-eval's own cache
            return original_init(self, lm, cache_db)
        self.lm, self.cache_db, self.dbdict = lm, cache_db, None
        store = lm.open_result_store(result_store_path_for_cache(cache_db))
        logger.warning("kvinject: --use_cache reuses per-doc results from the result store %s", store.path)

    def __getattr__(self, attr):
        lm = self.__dict__.get("lm")
        if hasattr(lm, "open_result_store"):
            return getattr(lm, attr)
        return original_getattr(self, attr)

    caching_class.__init__, caching_class.__getattr__ = __init__, __getattr__
