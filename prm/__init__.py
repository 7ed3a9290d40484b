"""Legacy process-reward (PRM) scoring, DEPRECATED: kept only for comparison with the original study.

Torch-free: steps.py splits a condition's text into reasoning steps; aggregate.py turns per-step
scores into per-doc and per-condition summaries with bootstrap intervals over docs. The judge model
itself lives in model_adapters/prm_judge.py; ``kvinject prm`` (kvinject/commands/prm.py) wires them.
"""
