"""Wrapped around lm-eval's ``EvaluationTracker.save_results_aggregated`` by the start-up hook
(kvinject/_autoload.py): the run's own trace file is copied beside ``results_<date>.json``, and the
task configs are written with functions named by import path (so identical runs give identical files).

The run's trace file is the one its model reported in ``get_model_info()["trace_file"]``, which lm-eval
merges into ``results["config"]``; no other file (of an earlier run in the same process) is copied.
"""
import functools
import shutil
from pathlib import Path

from kvinject.model_adapters.trace_log import SUFFIX


def results_folder(tracker) -> Path | None:
    """Where lm-eval wrote this run's results file (None without ``--output_path``)."""
    if not tracker.output_path:
        return None
    path = Path(tracker.output_path)
    return path.parent if path.suffix == ".json" else path / str(tracker.general_config_tracker.model_name_sanitized)


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


def copy_run_traces_beside_results(save_results_aggregated):
    """After lm-eval writes results_<date>.json, copy this run's trace file next to it."""

    @functools.wraps(save_results_aggregated)
    def save(self, results, samples=None):
        if results and "configs" in results:
            results = {**results, "configs": named_callables(results["configs"])}
        save_results_aggregated(self, results, samples)
        folder = results_folder(self)
        trace_file = ((results or {}).get("config") or {}).get("trace_file")
        if folder is None or not trace_file or not Path(trace_file).is_file():
            return  # no output folder, another model, or nothing computed (all from --use_cache)
        suffix = SUFFIX if str(trace_file).endswith(SUFFIX) else Path(trace_file).suffix
        shutil.copyfile(trace_file, folder / f"traces_{self.date_id}{suffix}")

    return save
