"""kvinject: how fast a language model adapts to context injected into its KV-cache mid-generation.

Subpackages: ``kvinject.model_adapters`` (model loading, injection engine, lm-eval model),
``kvinject.adaptation_tasks`` (datasets and lm-eval tasks), ``kvinject.metrics`` (pure metric functions).
"""
__version__ = "0.1.0"
