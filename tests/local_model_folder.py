"""Build a tiny randomly initialised causal LM as a real Hugging Face folder (config, safetensors,
tokenizer), so the loading code and the command line are exercised exactly as with a Hub model."""
from pathlib import Path

CORPUS = [
    "What is the capital of France? The answer is Paris.",
    "Tom has 3 apples and buys 5 more. How many apples does he have now? 3 + 5 = 8. The answer is 8.",
    "Wait, the problem has changed. The new problem is: Solving the new problem:",
    "Question: Answer: 0 1 2 3 4 5 6 7 8 9 10 100 \\boxed{} + - * / = .",
]


def build_tiny_model_folder(folder: Path, vocab_size: int = 384) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
