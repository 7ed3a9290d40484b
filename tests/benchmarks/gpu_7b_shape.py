"""The benchmark comparisons at Qwen2.5-Math-7B's shape: a randomly initialised model with its exact
config (no download), bf16 on one GPU, plus peak memory and docs/hour for the full 1,000-doc study.

    python tests/benchmarks/gpu_7b_shape.py            # one GPU, under 5 minutes
    python tests/benchmarks/gpu_7b_shape.py --tiny     # same table from a tiny config on the CPU (tested)

Random weights give the real model's compute and memory per token, not its text: every row decodes
to its full budget (no EOS), which is the study's worst case. Prompts are MAWPS-like questions under
a byte tokenizer (one token per character, about 120 tokens per prompt).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # measure, comparisons, naive_reference as in the suite
sys.path.insert(1, str(Path(__file__).parent.parent))  # tests/helpers.py (precision tolerances)

from comparisons import (  # noqa: E402
    analysis_vs_batched_reprompt,
    batch_scaling,
    doc_analysis_vs_generate,
    inject_vs_reprefill,
    math_problems,
    naive_vs_engine,
)
from measure import Row, format_table, peak_memory_mib  # noqa: E402

STUDY_DOCS = 1000

# Qwen2.5-Math-7B's config.json, hard-coded so that nothing is downloaded.
QWEN25_MATH_7B = dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                      intermediate_size=18944, vocab_size=152064, rope_theta=10000.0, max_position_embeddings=4096,
                      rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False, hidden_act="silu")
TINY = dict(QWEN25_MATH_7B, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=512)


class ByteTokenizer:
    """One id per byte after three specials (pad, BOS, EOS); ids past the bytes decode as <id>.
    Reports the model's full vocabulary so that random controls draw from all of it."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.bos_token_id, self.eos_token_id, self.all_special_ids = 1, None, [0, 1, 2]

    def __len__(self):
        return self.vocab_size

    def encode(self, text, add_special_tokens=True):
        return ([self.bos_token_id] if add_special_tokens else []) + [3 + b for b in text.encode()]

    def decode(self, ids, skip_special_tokens=False):
        pieces = []
        for i in ids:
            if i < 3:
                pieces.append("" if skip_special_tokens else f"<{i}>")
            else:
                pieces.append(chr(i - 3) if i < 3 + 128 else f"<{i}>")
        return "".join(pieces)


def build_model(tiny: bool, device: str):
    import transformers

    config = transformers.Qwen2Config(**(TINY if tiny else QWEN25_MATH_7B))
    dtype = torch.float32 if tiny else torch.bfloat16
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = transformers.Qwen2ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = None
    return model, ByteTokenizer(config.vocab_size)


def doc_memory(model, tokenizer, problem, device: str, label: str) -> list[Row]:
    """Peak memory of one doc's analysis (weights included, every row in the model's dtype: scoring
    runs inside the decoding loop) beside the KV-cache estimate batch_size=auto sizes batches with
    (model_adapters/memory.py)."""
    from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings
    from kvinject.model_adapters.memory import doc_kv_bytes, doc_shape, hidden_layers, kv_bytes_per_position

    settings = InjectionSettings(track_attention=False, track_hidden=False)
    shape = doc_shape(tokenizer, problem, settings.strategy, len(settings.injection_points))
    position = kv_bytes_per_position(model.config, model.dtype.itemsize)
    rows = []
    for share_prompts in (False, True):
        before = peak_memory_mib(lambda: None, device)  # the weights and whatever else is resident
        engine = InjectionEngine(model, tokenizer, settings, share_prompts=share_prompts)
        peak = peak_memory_mib(lambda: engine.run([problem]), device)
        estimate = doc_kv_bytes(shape, position, position, hidden_layers(model.config), share_prompts) / 2**20
        # ~1 when the estimate accounts for the peak (on the CPU the resident set never shrinks, so it reads ~1 there)
        rows.append(Row(f"peak_memory{label} one doc share_prompts={str(share_prompts).lower()}", "peak MiB",
                        "resident MiB + KV estimate MiB", peak / (before + estimate), "",
                        f"measured peak {peak:.0f} MiB ({before:.0f} resident); KV estimate per doc {estimate:.0f} MiB "
                        "(memory.doc_kv_bytes)"))
    return rows


def main(argv=None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny config on the CPU (what the test runs)")
    parser.add_argument("--budget", type=int, help="max new tokens per doc (default 256; --tiny 12)")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions per comparison (default 3; --tiny 1)")
    args = parser.parse_args(argv)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if not args.tiny and device == "cpu":
        parser.error("no GPU found: the 7B shape needs one (use --tiny for the CPU check)")
    budget = args.budget or (12 if args.tiny else 256)
    repeats = args.repeats or (1 if args.tiny else 3)
    started = time.perf_counter()
    model, tokenizer = build_model(args.tiny, device)
    label = " [tiny Qwen2]" if args.tiny else " [Qwen2.5-Math-7B shape, bf16]"

    rows = [inject_vs_reprefill(model, repeats, label=label)]
    problem = math_problems(1, budget)[0]
    for track in (True, False):
        rows += doc_analysis_vs_generate(model, tokenizer, problem, track, repeats, label=label)[0]
    rows += analysis_vs_batched_reprompt(model, tokenizer, problem, repeats, label=label)[0]
    naive_budget = min(budget, 16)  # the naive reference is quadratic in the budget
    rows.append(naive_vs_engine(model, tokenizer, math_problems(1, naive_budget)[0], 1, label=label)[0])
    scaling, rates = batch_scaling(model, tokenizer, math_problems(8, budget), max(1, repeats - 1), label=label)
    rows += scaling
    per_doc_mib = peak_memory_mib(lambda: doc_analysis_vs_generate(model, tokenizer, problem, True, 1)[1], device)
    rows += doc_memory(model, tokenizer, problem, device, label)

    best = max(rates, key=rates.get)
    docs_per_hour = rates[best] * 3600
    print(format_table(rows, f"kvinject ratio table{label} (medians of {repeats} interleaved repetitions)"))
    print(f"peak memory of one doc's analysis (weights included): {per_doc_mib:.0f} MiB")
    print(f"full study estimate: {STUDY_DOCS} docs x (baseline, oracle, 3 injection + 3 noise branches), "
          f"budget {budget}, batch {best}: {docs_per_hour:.0f} docs/hour -> {STUDY_DOCS / docs_per_hour:.2f} hours")
    print(f"script wall time: {time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
