"""lm-eval's own flags with --model kvinject: chat templates (with the update as a user turn),
few-shot as multi-turn, system instruction, --predict_only, --samples, --seed."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from kvinject.model_adapters.chat_turns import user_turn_frame
from kvinject.model_adapters.model_args import DEFAULT_USER_TURN_TEMPLATE, ModelArgsError, parse_model_args
from kvinject.model_adapters.trace_log import read_traces

# A ChatML-like template over the tiny tokenizer's two special tokens.
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_chat_model_dir(local_model_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-chat") / "model"
    shutil.copytree(local_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


def lm_eval(args, cwd):
    result = subprocess.run([sys.executable, "-m", "lm_eval", *args], capture_output=True, text=True, cwd=cwd,
                            env=dict(os.environ), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_folder(out):
    return next(path.parent for path in out.rglob("results_*.json"))


def test_the_user_turn_frame_comes_from_the_chat_template(tiny_chat_model_dir, local_model_dir):
    from transformers import AutoTokenizer

    assert user_turn_frame(AutoTokenizer.from_pretrained(tiny_chat_model_dir), "m") == ("</s>\n<s>user\n", "</s>\n<s>assistant\n")
    with pytest.raises(ValueError, match="injection_turn=user needs a chat template"):
        user_turn_frame(AutoTokenizer.from_pretrained(local_model_dir), "m")


def test_injection_turn_model_arg():
    assert parse_model_args({"injection_turn": "user"}).injection_template == DEFAULT_USER_TURN_TEMPLATE
    assert parse_model_args({"injection_turn": "user", "injection_template": "New: {alternative}"}).injection_template == "New: {alternative}"
    with pytest.raises(ModelArgsError, match="injection_turn='assistant': expected one of inline, user"):
        parse_model_args({"injection_turn": "assistant"})
    with pytest.raises(ModelArgsError, match="injection_turn=user has no effect with strategy=replace"):
        parse_model_args({"injection_turn": "user", "strategy": "replace"})


def test_chat_template_multiturn_fewshot_system_instruction_samples_and_seed(tiny_chat_model_dir, tmp_path):
    out = tmp_path / "out"
    lm_eval(["--model", "kvinject", "--model_args",
             f"pretrained={tiny_chat_model_dir},injection_points=1,injection_turn=user",
             "--tasks", "adaptation_semantic", "--samples", json.dumps({"adaptation_semantic": [1, 2]}),
             "--apply_chat_template", "--fewshot_as_multiturn", "--num_fewshot", "1",
             "--system_instruction", "Answer in one sentence.", "--seed", "7,8,9,10",
             "--gen_kwargs", "max_gen_toks=4", "--output_path", str(out), "--log_samples"], cwd=tmp_path)
    folder = run_folder(out)
    results = json.loads(next(folder.glob("results_*.json")).read_text())
    assert results["config"]["random_seed"] == 7 and results["config"]["fewshot_seed"] == 10
    assert results["chat_template"] == CHAT_TEMPLATE and results["fewshot_as_multiturn"] is True
    records = read_traces(next(folder.glob("traces_*.jsonl.gz")))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    head = tokenizer.encode("</s>\n<s>user\n", add_special_tokens=False)
    tail = tokenizer.encode("</s>\n<s>assistant\n", add_special_tokens=False)
    assert head[0] == tokenizer.eos_token_id and tokenizer.bos_token_id in head and tail[0] == tokenizer.eos_token_id
    samples = [json.loads(line) for line in next(folder.glob("samples_*.jsonl")).read_text().splitlines()]
    assert sorted(s["doc_id"] for s in samples) == [1, 2] and len(records) == 2
    for record in records:
        trace = record["trace"]
        prompt = trace["prompts"]["original"]["text"]
        assert prompt.startswith("<s>system\nAnswer in one sentence.</s>\n<s>user\n")
        assert prompt.count("<s>user\n") == 2 and prompt.endswith("<s>assistant\n")  # one example turn + the question
        injected = trace["conditions"]["injection@1"]["injected_ids"]  # the frame's special tokens as ids
        assert injected[: len(head)] == head and injected[-len(tail):] == tail
        assert tokenizer.decode(injected[len(head): -len(tail)]).startswith("The problem has changed.")


def test_predict_only_keeps_outputs_and_traces_without_metrics(local_model_dir, tmp_path):
    out = tmp_path / "out"
    lm_eval(["--model", "kvinject", "--model_args", f"pretrained={local_model_dir},injection_points=1",
             "--tasks", "adaptation_semantic", "--limit", "2", "--predict_only",
             "--gen_kwargs", "max_gen_toks=4", "--output_path", str(out)], cwd=tmp_path)
    folder = run_folder(out)
    results = json.loads(next(folder.glob("results_*.json")).read_text())
    assert not any("@1" in key for key in results["results"]["adaptation_semantic"])
    assert len(next(folder.glob("samples_adaptation_semantic_*.jsonl")).read_text().splitlines()) == 2
    assert len(read_traces(next(folder.glob("traces_*.jsonl.gz")))) == 2


@pytest.mark.slow
def test_smollm2_chat_run_with_the_update_as_a_user_turn(tmp_path):
    """The injected segment is framed by SmolLM2's own turn tokens, as ids (not text)."""
    out = tmp_path / "out"
    lm_eval(["--model", "kvinject", "--model_args", "pretrained=smollm2-135m,injection_points=2,injection_turn=user",
             "--tasks", "adaptation_semantic", "--limit", "1", "--apply_chat_template",
             "--gen_kwargs", "max_gen_toks=6", "--output_path", str(out)], cwd=tmp_path)
    trace = read_traces(next(run_folder(out).glob("traces_*.jsonl.gz")))[0]["trace"]
    from transformers import AutoTokenizer

    from kvinject.model_adapters.offline_models import OFFLINE_MODELS, safetensors_copy_of_gguf

    tokenizer = AutoTokenizer.from_pretrained(safetensors_copy_of_gguf(OFFLINE_MODELS["smollm2-135m"].gguf_path()))
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert trace["prompts"]["original"]["ids"][0] == start  # the chat template rendered the prompt
    injected = trace["conditions"]["injection@2"]["injected_ids"]
    head = tokenizer.encode("<|im_end|>\n<|im_start|>user\n", add_special_tokens=False)
    tail = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    assert head[0] == end and start in head and tail[0] == end and start in tail  # single special-token ids
    assert injected[: len(head)] == head and injected[-len(tail):] == tail
