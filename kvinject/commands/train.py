"""``kvinject train``: fine-tune a model to follow mid-generation updates (see training/pipeline.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from kvinject.commands import UsageError
from kvinject.training.config import METHODS, TARGETS, TrainConfig

_HELP = {
    "task": "adaptation task whose docs are split and trained on",
    "model_args": "the base model, as lm_eval's --model_args for --model kvinject (injection_template is used)",
    "injection_point": "baseline tokens generated before the injected update",
    "target": "oracle: the model's own greedy continuation from the alternative prompt; gold: the doc's gold solution",
    "max_new_tokens": "the oracle's generation budget",
    "eval_fraction": "share of docs held out (by doc id)",
    "max_train_docs": "train on the first K training docs only",
    "eval_samples_limit": "eval_samples.json lists the first K held-out docs only",
    "method": f"one of {', '.join(METHODS)}",
}


def add_arguments(parser) -> None:
    """The flags of ``kvinject train``: --output_path, --split_only and one per TrainConfig field."""
    parser.add_argument("--output_path", required=True, type=Path,
                        help="run folder (config, split, checkpoints, model/); an existing run there resumes")
    parser.add_argument("--split_only", action="store_true",
                        help="write the config, split.json and eval_samples.json, then stop (measure the base model first)")
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        kind = {int: int, float: float}.get(type(default), str)
        if field.name in ("max_train_docs", "eval_samples_limit"):
            kind = int
        choices = {"method": METHODS, "target": TARGETS}.get(field.name)
        parser.add_argument(f"--{field.name}", type=kind, default=default, choices=choices,
                            help=f"{_HELP.get(field.name, '')} (default: {default})".strip())


def _config(args) -> TrainConfig:
    """The run's settings, checked before anything is written (UsageError names a bad value or a missing
    model folder)."""
    from lm_eval.utils import simple_parse_args_string

    from kvinject.commands.common import model_folder_exists
    from kvinject.model_adapters.model_args import parse_model_args

    try:
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
        model_args = parse_model_args(simple_parse_args_string(config.model_args))
    except ValueError as error:
        raise UsageError(str(error)) from None
    model_folder_exists(model_args.pretrained, "--model_args")
    return config


def run(args) -> int:
    """Write the split and, unless --split_only, fine-tune and save the model, then print the lm_eval command for
    the held-out docs; 0."""
    from kvinject.training.fine_tune import MODEL_FOLDER, training_losses
    from kvinject.training.pipeline import run_training

    config = _config(args)
    log = run_training(config, args.output_path, split_only=args.split_only)
    if log is None:
        print(f"split written: {args.output_path / 'split.json'}; held-out docs for lm_eval --samples: "
              f"{args.output_path / 'eval_samples.json'}")
        return 0
    losses = training_losses(log)
    if losses:
        print(f"training loss: step {losses[0][0]} {losses[0][1]:.4f} -> step {losses[-1][0]} {losses[-1][1]:.4f}")
    print(f"model: {args.output_path / MODEL_FOLDER}")
    print(f"held-out docs: lm_eval --model kvinject --model_args pretrained={args.output_path / MODEL_FOLDER} "
          f"--tasks {config.task} --samples {args.output_path / 'eval_samples.json'} --output_path <folder>")
    return 0
