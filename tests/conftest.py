import pytest

from local_model_folder import build_tiny_model_folder


@pytest.fixture(scope="session")
def local_model_dir(tmp_path_factory):
    """A tiny random Llama saved as a regular Hugging Face folder (config, safetensors, tokenizer)."""
    return build_tiny_model_folder(tmp_path_factory.mktemp("tiny-llama"))
