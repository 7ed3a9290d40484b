"""The injection engine: exact forked KV-cache injection, greedy decoding and counterfactual scoring.

- ``injection_engine``: runs every condition of a batch of problems and builds their traces;
- ``decoding``: the decoding loop (rows join and leave one running batch); ``row_cache``: per-row
  caches and padding;
- ``scoring``: scoring under the run, old and new contexts inside the loop; ``divergence``: KL, entropy;
- ``attention``: eager attention (weights) without repeated KV heads, checked against the family's own;
- ``rope``: moving rotary-embedded keys to new positions (``strategy=replace``);
- ``noise``: length-matched control segments; ``tokens``: the tokenizer protocol, stops and EOS ids.
"""
from kvinject.model_adapters.engine.injection_engine import EngineTokenizer, InjectionEngine, Problem
from kvinject.model_adapters.injection_settings import InjectionSettings

__all__ = ["EngineTokenizer", "InjectionEngine", "InjectionSettings", "Problem"]
