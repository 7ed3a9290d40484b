"""kvinject train: examples match the engine's ids, split by doc id, loss drops, resume, loadable output."""
import dataclasses
import json

import pytest
import torch

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.training.config import TrainConfig
from kvinject.training.examples import IGNORE_INDEX, build_examples
from kvinject.training.fine_tune import fine_tune, training_losses
from kvinject.training.split import EVAL_SAMPLES_FILE, load_split, save_split, split_by_doc_id

PROBLEMS = [
    Problem(f"d{i}", f"Question: What is {i} + 3? Answer:", f"Question: What is {i} + 4? Answer:",
            f" Wait, the new problem is: What is {i} + 4? ", max_new_tokens=6)
    for i in range(4)
]


def test_context_and_target_are_the_ids_the_engine_feeds_and_the_oracle_generates(tiny_model_builder, tiny_tokenizer):
    model = tiny_model_builder("llama")
    examples, skipped = build_examples(model, tiny_tokenizer, PROBLEMS, injection_point=2, batch_size=3)
    traces = InjectionEngine(model, tiny_tokenizer, InjectionSettings(injection_points=(2,), track_attention=False,
                                                                      track_hidden=False)).run(PROBLEMS)
    assert skipped == {} and len(examples) == len(PROBLEMS)
    for example, trace in zip(examples, traces):
        injection, oracle = trace["conditions"]["injection@2"], trace["conditions"]["oracle"]["ids"]
        context = trace["prompts"]["original"]["ids"] + injection["pre_ids"] + injection["injected_ids"]
        assert example.input_ids == context + oracle
        assert example.labels == [IGNORE_INDEX] * len(context) + oracle and example.n_target == len(oracle)


def test_a_doc_the_engine_would_not_inject_is_skipped_with_its_reason(tiny_model_builder, tiny_tokenizer_class):
    model = tiny_model_builder("llama")
    tokenizer = tiny_tokenizer_class(eos_token_id=None)
    first = build_examples(model, tokenizer, PROBLEMS[:1], injection_point=1)[0][0]
    stop_now = tokenizer.decode(first.input_ids[len(tokenizer.encode(PROBLEMS[0].original_prompt)):][:1])
    stopping = dataclasses.replace(PROBLEMS[0], stop_sequences=(stop_now,))
    examples, skipped = build_examples(model, tokenizer, [stopping, PROBLEMS[1]], injection_point=3)
    assert [e.doc_id for e in examples] == ["d1"]
    assert skipped["d0"].startswith("baseline stopped after 1 tokens (stop_sequence)")
    # the engine's rule and message, word for word
    traces = InjectionEngine(model, tokenizer, InjectionSettings(injection_points=(3,))).run([stopping, PROBLEMS[1]])
    assert skipped["d0"] == traces[0]["conditions"]["injection@3"]["not_injected_reason"]
    assert traces[1]["conditions"]["injection@3"]["injected"]


@pytest.mark.parametrize("field, value", [("target", "silver"), ("method", "qlora"), ("eval_fraction", 1.0)])
def test_train_config_refuses_a_bad_choice(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        TrainConfig(**{field: value})


def test_a_saved_config_with_an_unknown_setting_is_named(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps({"task": "adaptation_math", "learning_rat": 0.1}))
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['learning_rat'\]; valid .*learning_rate"):
        TrainConfig.load(tmp_path)


def test_gold_target_is_the_solution_segment_and_eos(tiny_model_builder, tiny_tokenizer_class):
    tokenizer = tiny_tokenizer_class(eos_token_id=2)
    examples, _ = build_examples(tiny_model_builder("llama"), tokenizer, PROBLEMS[:2], 0, "gold",
                                 {"d0": " 4", "d1": " 5"})
    assert examples[1].labels[-3:] == tokenizer.encode(" 5", add_special_tokens=False) + [2]
    with pytest.raises(ValueError, match="no gold solution for doc"):
        build_examples(tiny_model_builder("llama"), tokenizer, PROBLEMS[2:], 0, "gold", {})


def test_split_is_by_doc_id_disjoint_seeded_and_saved_for_lm_eval_samples(tmp_path):
    ids = [f"doc-{i}" for i in range(20)]
    split = split_by_doc_id("adaptation_math", ids, 0.3, seed=7)
    assert len(split.eval_ids) == 6 and set(split.train_ids) | set(split.eval_ids) == set(ids)
    assert not set(split.train_ids) & set(split.eval_ids)
    assert split_by_doc_id("adaptation_math", ids[::-1], 0.3, seed=7).eval_ids == tuple(sorted(split.eval_ids, key=ids[::-1].index))
    assert [ids[i] for i in split.eval_indices] == list(split.eval_ids)
    save_split(split, tmp_path, eval_samples_limit=2)
    assert load_split(tmp_path) == split
    assert json.loads((tmp_path / EVAL_SAMPLES_FILE).read_text()) == {"adaptation_math": list(split.eval_indices[:2])}
    with pytest.raises(ValueError, match="held-out docs of adaptation_math: " + split.eval_ids[0]):
        split.check_disjoint([split.train_ids[0], split.eval_ids[0]])
    with pytest.raises(ValueError, match="duplicate doc ids doc-1"):
        split_by_doc_id("adaptation_math", ids + ["doc-1"], 0.3, seed=7)


def _tiny_examples(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    examples, _ = build_examples(model, tokenizer, PROBLEMS, injection_point=2)
    return model, tokenizer, examples


# One batch holds every example, so each step sees the same data and the loss must fall.
FAST = dict(batch_size=len(PROBLEMS), learning_rate=5e-3, max_steps=6, save_steps=2, seed=3)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_few_steps_lower_the_loss_and_the_saved_folder_loads_through_kvinject(local_model_dir, tmp_path, method):
    from kvinject.model_adapters.harness_model import KVInjectLM

    model, tokenizer, examples = _tiny_examples(local_model_dir)
    log = fine_tune(model, tokenizer, examples, TrainConfig(method=method, **FAST), tmp_path)
    losses = [loss for _, loss in training_losses(log)]
    assert len(losses) == 6 and losses[-1] < losses[0]
    saved = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert "model.safetensors" in saved and not any("adapter" in name for name in saved)
    lm = KVInjectLM(pretrained=str(tmp_path / "model"), injection_points="1", trace_dir=str(tmp_path / "traces"))
    trace = lm.engine.run(PROBLEMS[:1])[0]
    assert trace["conditions"]["injection@1"]["injected"]


def test_an_interrupted_run_resumes_from_its_last_checkpoint_and_ends_where_an_uninterrupted_one_does(local_model_dir, tmp_path):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated crash after step 3")

    config = TrainConfig(**FAST)
    model, tokenizer, examples = _tiny_examples(local_model_dir)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(model, tokenizer, examples, config, tmp_path / "run", callbacks=[Crash()])
    model, tokenizer, examples = _tiny_examples(local_model_dir)
    resumed = fine_tune(model, tokenizer, examples, config, tmp_path / "run")
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert [step for step, _ in training_losses(resumed)][-4:] == [3, 4, 5, 6]
    model, tokenizer, examples = _tiny_examples(local_model_dir)
    straight = fine_tune(model, tokenizer, examples, config, tmp_path / "straight")
    assert training_losses(resumed)[-1][1] == pytest.approx(training_losses(straight)[-1][1], rel=1e-4)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "run/model/model.safetensors"), load_file(tmp_path / "straight/model/model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_kvinject_train_trains_on_training_docs_only_and_refuses_other_settings_in_the_same_folder(local_model_dir, tmp_path, monkeypatch):
    import functools

    from kvinject.cli import main
    from kvinject.training import pipeline
    from kvinject.training.pipeline import read_examples

    # The task index and docs are built once (lm-eval takes ~15 s a time); the second command reuses them.
    monkeypatch.setattr(pipeline, "load_task_docs", functools.lru_cache(pipeline.load_task_docs))
    output = tmp_path / "run"
    common = ["train", "--output_path", str(output), "--task", "adaptation_semantic", "--model_args",
              f"pretrained={local_model_dir}", "--injection_point", "1", "--max_new_tokens", "4",
              "--max_train_docs", "3", "--max_steps", "2", "--batch_size", "2", "--eval_fraction", "0.5"]
    assert main(common + ["--split_only"]) == 0  # measure the base model on the held-out docs first
    assert (output / EVAL_SAMPLES_FILE).exists() and not (output / "examples.jsonl").exists()
    assert main(common) == 0
    split = load_split(output)
    examples = read_examples(output / "examples.jsonl")
    assert examples and {e.doc_id for e in examples} <= set(split.train_ids[:3])
    assert not {e.doc_id for e in examples} & set(split.eval_ids)
    assert json.loads((output / "train_config.json").read_text())["injection_point"] == 1
    assert (output / "model" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="injection_point: saved 1, now 2"):
        main(common[:-8] + ["--injection_point", "2"] + common[-6:])


def test_a_model_marked_gguf_quantized_trains_and_saves_without_the_marker(local_model_dir, tmp_path):
    """Offline aliases load dequantised GGUF weights that transformers still marks as quantized."""
    from types import SimpleNamespace

    model, tokenizer, examples = _tiny_examples(local_model_dir)
    model.hf_quantizer = SimpleNamespace(quantization_config=SimpleNamespace(quant_method="gguf"), is_trainable=False)
    model.is_quantized = True
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf", "dequantize": False}
    fine_tune(model, tokenizer, examples, TrainConfig(**{**FAST, "max_steps": 1}), tmp_path)
    assert "quantization_config" not in json.loads((tmp_path / "model" / "config.json").read_text())


@pytest.mark.slow
def test_measure_train_measure_on_smollm2_puts_the_trained_model_beside_the_base_in_the_report(tmp_path):
    """The README's loop on the real SmolLM2 (CPU, minutes): split, measure the base model on the
    held-out docs, train on the training docs, measure the trained model on the same held-out
    docs, and `kvinject report` lines the two up."""
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    from kvinject.cli import main
    from kvinject.training.pipeline import read_examples

    if not os.environ.get("KVINJECT_MAWPS_SOURCE"):
        pytest.skip("KVINJECT_MAWPS_SOURCE is not set (CI points it at ../shared/data/mawps/svamp/cv_mawps)")
    run = tmp_path / "run"
    settings = ["--output_path", str(run), "--task", "adaptation_math", "--model_args", "pretrained=smollm2-135m",
                "--injection_point", "1", "--max_new_tokens", "16", "--max_train_docs", "6",
                "--eval_samples_limit", "2", "--max_steps", "2", "--batch_size", "2"]
    assert main(["train", "--split_only"] + settings) == 0

    def measure(pretrained: str, out: Path) -> None:
        subprocess.run(
            [str(Path(sys.executable).parent / "lm_eval"), "--model", "kvinject", "--model_args",
             f"pretrained={pretrained},injection_points=1", "--tasks", "adaptation_math",
             "--samples", str(run / EVAL_SAMPLES_FILE), "--gen_kwargs", "max_gen_toks=16",
             "--output_path", str(out)], check=True, capture_output=True, text=True, cwd=tmp_path)

    measure("smollm2-135m", tmp_path / "results" / "base")
    assert main(["train"] + settings) == 0
    split = load_split(run)
    measure(str(run / "model"), tmp_path / "results" / "trained")
    assert main(["report", str(tmp_path / "results"), "--output_path", str(tmp_path / "report")]) == 0
    rows = list(csv.DictReader((tmp_path / "report" / "leaderboard.csv").open()))
    assert sorted(Path(row["results_file"]).parts[-3] for row in rows) == ["base", "trained"]
    for row in rows:   # each model's held-out measures, as its own results JSON has them
        assert row["task"] == "adaptation_math" and row["n_docs"] == "2"
        results = json.loads(Path(row["results_file"]).read_text())["results"]["adaptation_math"]
        assert float(row["kl_run_new@1"]) == results["kl_run_new@1,none"]
    examples = {e.doc_id for e in read_examples(run / "examples.jsonl")}
    assert examples and not examples & set(split.eval_ids)
