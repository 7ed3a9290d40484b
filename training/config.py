"""Every setting of a ``kvinject train`` run, written to ``train_config.json`` in its output folder.

A resumed run must use the same settings: resuming with different ones would silently mix two
experiments in one checkpoint history, so ``check_resumable`` refuses and names the differences.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kvinject.settings_mapping import from_mapping

CONFIG_FILE = "train_config.json"
METHODS = ("lora", "full")
TARGETS = ("oracle", "gold")  # what the model learns to write after the update (see training/examples.py)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    task: str = "adaptation_math"
    model_args: str = "pretrained=smollm2-135m"  # the `--model_args` string of the base model
    injection_point: int = 5  # baseline tokens generated before the injected update
    target: str = "oracle"  # oracle: the model's own greedy oracle continuation; gold: a gold solution text
    max_new_tokens: int = 64  # the oracle's generation budget (the task's stop sequences apply)
    eval_fraction: float = 0.5  # share of docs held out, chosen by doc id
    split_seed: int = 0
    max_train_docs: int | None = None  # use only the first K training docs (CPU runs)
    eval_samples_limit: int | None = None  # eval_samples.json lists only the first K held-out docs
    method: str = "lora"  # lora (merged into the saved weights) or full
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    save_steps: int = 50
    seed: int = 0
    generation_batch_size: int = 8

    def __post_init__(self):
        for name, choices in (("method", METHODS), ("target", TARGETS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {', '.join(choices)}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction={self.eval_fraction}: must be strictly between 0 and 1")
        if self.injection_point < 0:
            raise ValueError(f"injection_point={self.injection_point}: must be >= 0")
        for name in ("max_new_tokens", "batch_size", "gradient_accumulation_steps", "save_steps", "lora_r", "generation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate}: must be > 0")

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "TrainConfig":
        return from_mapping(cls, json.loads((folder / CONFIG_FILE).read_text()), "training setting")

    def check_resumable(self, folder: Path) -> None:
        if not (folder / CONFIG_FILE).exists():
            return
        saved = dataclasses.asdict(TrainConfig.load(folder))
        differences = [f"{k}: saved {saved[k]!r}, now {v!r}" for k, v in dataclasses.asdict(self).items() if saved[k] != v]
        if differences:
            raise ValueError(f"{folder} holds a run with other settings; use a new output folder or the same "
                             f"settings ({'; '.join(differences)})")
