import dataclasses
from pathlib import Path

import pytest
import yaml

from kvinject.model_adapters.model_args import parse_model_args

# lm-eval --config files; configs/study/ holds `kvinject study` files (tests/commands/test_study.py)
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml") if "study" not in p.parent.parts)


def test_there_are_configs_for_the_study_offline_and_families():
    names = {path.name for path in CONFIGS}
    assert {"qwen2.5-math-7b-gpu.yaml", "smollm2-offline.yaml"} <= names
    assert len([p for p in CONFIGS if p.parent.name == "families"]) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_names_only_valid_model_args(path):
    from lm_eval.config.evaluate_config import EvaluatorConfig

    config = EvaluatorConfig.load_yaml_config(path)
    assert config["model"] == "kvinject"
    parse_model_args(config["model_args"])  # raises on an unknown or invalid arg
    assert set(config["tasks"]) <= {"adaptation_math", "adaptation_semantic", "adaptation"}
    assert set(config) <= {f.name for f in dataclasses.fields(EvaluatorConfig)}
    assert yaml.safe_load(path.read_text()) == config
