"""The adaptation tasks: lm-eval YAMLs, their datasets and answer matching.

TASKS_DIR is the folder lm-eval indexes for ``adaptation_math``, ``adaptation_semantic`` and the
group ``adaptation`` (added to every TaskManager by kvinject's start-up hook).
"""
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
