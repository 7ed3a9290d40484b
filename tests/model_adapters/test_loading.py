import importlib.util

import pytest
import torch

from kvinject.model_adapters import loading, offline_models
from kvinject.model_adapters.loading import load_model_and_tokenizer, resolve_device, resolve_dtype
from kvinject.model_adapters.model_args import ModelArgsError, parse_model_args
from kvinject.model_adapters.offline_models import OFFLINE_MODELS, MissingModelPackageError


def test_unavailable_device_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(loading, "_available_devices", lambda: ["cpu"])  # a machine with a CPU only
    with pytest.warns(UserWarning, match="cuda:0 is not available here; using cpu"):
        assert resolve_device("cuda:0") == "cpu"
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_picks_the_gpu_where_there_is_one():
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"
    expected = torch.bfloat16 if loading.native_bf16("cuda") else torch.float32
    assert resolve_dtype("auto", "cuda") is expected


def test_auto_dtype_is_float32_on_cpu():
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16


def test_bfloat16_on_a_gpu_without_native_bfloat16_falls_back_to_float16_with_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (7, 5))  # e.g. a T4
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with pytest.warns(UserWarning, match="dtype=bfloat16: cuda:0 has no native bfloat16"):
        assert resolve_dtype("bfloat16", "cuda:0") is torch.float16
    assert resolve_dtype("auto", "cuda:0") is torch.float32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))  # H100: native
    assert resolve_dtype("bfloat16", "cuda:0") is torch.bfloat16
    assert resolve_dtype("auto", "cuda") is torch.bfloat16


def test_flash_attention_with_float32_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(loading, "weights_location", lambda args: pytest.fail("tried to load weights"))
    with pytest.raises(ModelArgsError, match="flash_attention_2 needs dtype=bfloat16 or float16"):
        parse_model_args({"attn_implementation": "flash_attention_2", "dtype": "float32"})  # explicit: at parse time
    auto = parse_model_args({"attn_implementation": "flash_attention_2", "device": "cpu"})  # auto is float32 here
    with pytest.raises(ModelArgsError, match="flash_attention_2 needs dtype=bfloat16 or float16"):
        load_model_and_tokenizer(auto)


def test_float32_scoring_of_a_16bit_model_is_refused_before_loading(monkeypatch):
    """Scoring runs inside the decoding loop's forwards, in the model's dtype (metrics/README.md, Precision)."""
    monkeypatch.setattr(loading, "weights_location", lambda args: pytest.fail("tried to load weights"))
    with pytest.raises(ModelArgsError, match="score_dtype=float32 needs a float32 model, but dtype resolves to bfloat16"):
        load_model_and_tokenizer(parse_model_args({"score_dtype": "float32", "dtype": "bfloat16", "device": "cpu"}))
    assert parse_model_args({}).score_dtype == "model"
    loading.check_score_dtype("float32", torch.float32)  # a float32 model scores in float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_4bit_compute_dtype_follows_dtype(dtype, monkeypatch):
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: object())  # as if bitsandbytes were installed
    config = loading._quantization_config(parse_model_args({"load_in_4bit": "true"}), "cuda:0", dtype)
    assert config.bnb_4bit_compute_dtype == dtype


def test_load_in_4bit_needs_cuda(local_model_dir):
    args = parse_model_args({"pretrained": str(local_model_dir), "load_in_4bit": True, "device": "cpu"})
    with pytest.raises(ModelArgsError, match="load_in_4bit=true needs a CUDA GPU"):
        load_model_and_tokenizer(args)


def test_local_folder_loads_in_eval_mode(local_model_dir):
    args = parse_model_args({"pretrained": str(local_model_dir), "device": "cpu"})  # auto would pick a GPU
    model, tokenizer, device = load_model_and_tokenizer(args)
    assert device == "cpu" and not model.training
    assert model.dtype is torch.float32
    assert model.config._attn_implementation == "sdpa"
    assert tokenizer.decode(tokenizer("The answer is 8.").input_ids) == "The answer is 8."


@pytest.mark.parametrize("alias", sorted(OFFLINE_MODELS))
def test_missing_wheel_says_what_to_install(alias, monkeypatch):
    real_find_spec = importlib.util.find_spec
    model = OFFLINE_MODELS[alias]
    monkeypatch.setattr(
        offline_models.importlib.util,
        "find_spec",
        lambda name, *a: None if name == model.package else real_find_spec(name, *a),
    )
    with pytest.raises(MissingModelPackageError) as error:
        load_model_and_tokenizer(parse_model_args({"pretrained": alias}))
    assert model.install in str(error.value)


@pytest.mark.slow
def test_smollm2_alias_converts_once_and_matches_the_gguf(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("KVINJECT_CACHE", str(tmp_path))
    gguf = OFFLINE_MODELS["smollm2-135m"].gguf_path()
    model, tokenizer, _ = load_model_and_tokenizer(parse_model_args({"pretrained": "smollm2-135m"}))
    assert model.config.model_type == "llama"
    converted = list((tmp_path / "converted").iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    # The cached copy is used the second time: same folder, no new conversion.
    load_model_and_tokenizer(parse_model_args({"pretrained": "smollm2-135m"}))
    assert list((tmp_path / "converted").iterdir()) == converted
    # ... and it gives the same logits as loading the GGUF directly with gguf_file=.
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = torch.tensor([tokenizer("The capital of France is").input_ids])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, direct(ids).logits, atol=1e-5)


@pytest.mark.slow
def test_gguf_file_arg_loads_a_gguf_directly():
    gguf = OFFLINE_MODELS["smollm2-135m"].gguf_path()
    args = parse_model_args({"pretrained": str(gguf.parent), "gguf_file": gguf.name})
    model, tokenizer, _ = load_model_and_tokenizer(args)
    assert model.config.model_type == "llama"
    assert tokenizer.eos_token == "<|im_end|>"


def test_offline_alias_without_gguf_says_what_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        offline_models.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a)
    )
    with pytest.raises(ModelArgsError, match=r"pretrained=smollm2-135m needs the gguf package: pip install 'kvinject\[gguf\]'"):
        load_model_and_tokenizer(parse_model_args({"pretrained": "smollm2-135m"}))


def test_unreachable_model_points_to_the_offline_models(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(OSError, match="offline models: smollm2-135m, gemma3-270m"):
        load_model_and_tokenizer(parse_model_args({"pretrained": str(missing)}))
