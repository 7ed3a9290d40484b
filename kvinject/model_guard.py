"""Wrapped around lm-eval's ``evaluate`` by the start-up hook (kvinject/_autoload.py): an adaptation
task run with a model that cannot inject fails before any generation, not at scoring time."""
import functools


def _leaf_tasks(task_dict):
    for value in task_dict.values():
        if isinstance(value, dict):
            yield from _leaf_tasks(value)
        else:
            yield value


def refuse_models_that_cannot_inject(evaluate):
    """``evaluate`` that raises at once when an adaptation task meets a model other than kvinject."""

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
