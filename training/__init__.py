"""Training utilities that close the loop measure -> train -> measure (``kvinject train``).

split.py     train/eval split of an adaptation task's docs by doc id, saved with an lm-eval ``--samples`` file
examples.py  supervised examples: prompt + baseline's first N ids + injected segment -> the oracle's continuation
fine_tune.py LoRA or full fine-tuning with transformers' Trainer; saves a merged safetensors model folder
config.py    every setting of a run, written beside it and checked when a run resumes
"""
