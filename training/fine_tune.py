"""Fine-tune on supervised examples with transformers' Trainer (LoRA via peft, or full).

The Trainer owns the loop, checkpoints (``<output>/checkpoints/checkpoint-<step>``), resuming
(``resume_from_checkpoint``) and seeding; this module only wires the data and saves the result as a
plain model folder (LoRA merged into the weights, safetensors, with the tokenizer) that
``--model_args pretrained=<output>/model`` loads like any Hugging Face folder.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

from kvinject.training.config import TrainConfig
from kvinject.training.examples import IGNORE_INDEX, TrainingExample

MODEL_FOLDER = "model"
CHECKPOINTS_FOLDER = "checkpoints"
LOG_FILE = "train_log.json"


def _dataset(examples: Sequence[TrainingExample]):
    from datasets import Dataset

    return Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])


def _collator(tokenizer):
    """Pads input_ids with the pad (or EOS) id and labels with -100, so padding carries no loss."""
    from transformers import DataCollatorForSeq2Seq

    padding_tokenizer = copy.deepcopy(tokenizer)  # the saved tokenizer stays as the base model's
    if padding_tokenizer.pad_token_id is None:
        padding_tokenizer.pad_token = padding_tokenizer.eos_token
    padding_tokenizer.padding_side = "right"
    return DataCollatorForSeq2Seq(padding_tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


def _drop_gguf_marker(model) -> None:
    """A model loaded from a GGUF file (or the offline aliases' converted copies) holds dequantised
    float tensors, yet transformers still marks it quantized (quant_method gguf): Trainer then refuses
    it and save_pretrained would write the marker into the trained model's config. Drop the marker."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and str(getattr(quantizer.quantization_config, "quant_method", "")).lower().endswith("gguf"):
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config


def _trainable(model, config: TrainConfig):
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def last_checkpoint(output: Path) -> str | None:
    """The newest Trainer checkpoint under ``output``/checkpoints to resume from, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = output / CHECKPOINTS_FOLDER
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def fine_tune(model, tokenizer, examples: Sequence[TrainingExample], config: TrainConfig, output: Path,
              resume: bool = True, callbacks: Sequence = ()) -> dict:
    """Train, save ``<output>/model`` and ``<output>/train_log.json``; return the Trainer's log history
    and where training started from. ``resume``: continue from the last checkpoint if there is one."""
    from transformers import Trainer, TrainingArguments, set_seed

    if not examples:
        raise ValueError("no training examples (every training doc was skipped?)")
    set_seed(config.seed)  # before LoRA's random initialisation
    _drop_gguf_marker(model)
    model.train()
    trainable = _trainable(model, config)
    arguments = TrainingArguments(
        output_dir=str(output / CHECKPOINTS_FOLDER),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=1,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        use_cpu=model.device.type == "cpu",
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=trainable, args=arguments, train_dataset=_dataset(examples),
                      data_collator=_collator(tokenizer), callbacks=list(callbacks))
    start = last_checkpoint(output) if resume else None
    trainer.train(resume_from_checkpoint=start)
    final = trainable.merge_and_unload() if config.method == "lora" else trainable
    final.eval()
    final.save_pretrained(output / MODEL_FOLDER, safe_serialization=True)
    tokenizer.save_pretrained(output / MODEL_FOLDER)
    log = {"resumed_from": start, "log_history": trainer.state.log_history}
    (output / LOG_FILE).write_text(json.dumps(log, indent=1) + "\n")
    return log


def training_losses(log: dict) -> list[tuple[int, float]]:
    """(step, loss) of every logged training step."""
    return [(entry["step"], entry["loss"]) for entry in log["log_history"] if "loss" in entry]
