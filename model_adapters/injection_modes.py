"""The injection strategies and noise controls the engine implements.

Kept free of heavy imports: ``--model_args`` validation reads them before torch is loaded.
"""
STRATEGIES = ("append", "replace")  # append the new problem to the cache / swap the prompt's cache
NOISE_KINDS = ("random", "shuffle")  # seeded random non-special tokens / the injected tokens shuffled
