"""Helpers shared by the tests (pytest puts tests/ on sys.path; test modules never import each other).
Test functions reach them as fixtures (tests/conftest.py and the folders' conftest.py files); test
modules import from here only constants and what they use at module level (docs/architecture.md, 10).

- tiny models: ``TinyCharTokenizer``, ``build_tiny_model`` (2-layer random fp32 models of many
  families), ``build_tiny_model_folder`` (a tiny Llama saved as a real Hugging Face folder);
- engine references: ``full_log_probs``, ``no_stop``, ``prompt_cache`` (a forward with explicit
  positions), ``assert_forked_append_matches_one_forward_pass``, ``old_context_against_decode``,
  ``assert_same_trace``;
- metric fixtures: ``run_series``, ``attention_segments``, ``build_trace``, ``build_answers``: valid
  schema-1 traces built with kvinject.trace_schema's builders from a few arrays;
- harness requests: ``request`` (an lm-eval Instance as the adaptation tasks build it), ``GEN_KWARGS``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from kvinject.trace_schema import SEGMENTS, condition, empty_series, injection_condition
from kvinject.trace_schema import build_trace as schema_trace

TOLERANCE = 1e-4  # fp32 logits and keys against full recomputation
# 16-bit logits against full recomputation in the same dtype, relative to max(1, max |logit|): a few
# units in the last place of the largest logit (tests/test_engine_precision.py); float32: TOLERANCE
# absolute. Two greedy candidates closer than this are a tie the precision cannot order.
LOGIT_TOLERANCE = {"float32": None, "bfloat16": 2e-2, "float16": 4e-3}


def logit_tolerance(dtype, scale: float) -> float:
    """The LOGIT_TOLERANCE of ``dtype`` (a torch dtype) for logits of magnitude up to ``scale``."""
    relative = LOGIT_TOLERANCE[str(dtype).removeprefix("torch.")]
    return TOLERANCE if relative is None else relative * max(1.0, scale)

# ----------------------------------------------------------------------------------- tiny models


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


# Families the engine tests run on (every test that takes `tiny_family_model`).
TINY_FAMILIES = ("qwen2", "llama", "mistral", "gemma2", "gemma3_text", "phi3", "gpt2", "qwen3")
_COMMON = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=512)
# model_type -> config arguments beside _COMMON. The rotary families cover half-split and
# interleaved pairs, full and partial rotary dimensions, one and two frequency sets.
FAMILY_CONFIGS = {
    "qwen2": {},
    "llama": {"rope_theta": 500.0},
    "mistral": {"sliding_window": 256},
    "gemma2": {"head_dim": 8, "sliding_window": 256},
    "gemma3_text": {"head_dim": 8, "sliding_window": 256, "layer_types": ["sliding_attention", "full_attention"]},
    "phi3": {"partial_rotary_factor": 0.5, "pad_token_id": 0},  # partial rotary
    "qwen3": {"head_dim": 16},
    "gemma": {"head_dim": 8},
    "stablelm": {"partial_rotary_factor": 0.25},  # partial rotary
    "gpt_neox": {"rotary_pct": 0.5},  # partial rotary
    "persimmon": {"partial_rotary_factor": 0.5},  # partial rotary
    "phi": {"partial_rotary_factor": 0.5},  # partial rotary
    "gptj": {"rotary_dim": 4},  # interleaved, partial, sinusoid table
    "codegen": {"rotary_dim": 4},  # interleaved, partial, sinusoid table
    "cohere": {},  # interleaved
    "glm": {"head_dim": 8, "pad_token_id": 0},  # interleaved, partial
    "olmo": {},
    "olmo2": {},
    "granite": {},
    "starcoder2": {},
}
ROTARY_FAMILIES = tuple(FAMILY_CONFIGS)  # every family above rotates its keys


def build_tiny_model(family: str, vocab_size: int = len(TinyCharTokenizer()), seed: int = 0):
    """A 2-layer fp32 model of ``family`` with random weights; generation_config has no EOS, so tests
    decide stops through the tokenizer."""
    import torch
    import transformers as tf

    if family == "gpt2":  # absolute position embeddings
        kwargs = dict(n_embd=32, n_layer=2, n_head=4, n_positions=512, bos_token_id=None, eos_token_id=None)
    else:
        kwargs = {**_COMMON, **FAMILY_CONFIGS[family]}
    # initializer_range 0.1 (not 0.02) gives peaked, varied greedy continuations instead of repeats.
    config = tf.AutoConfig.for_model(family, vocab_size=vocab_size, initializer_range=0.1, **kwargs)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = None
    return model


CORPUS = [
    "What is the capital of France? The answer is Paris.",
    "Tom has 3 apples and buys 5 more. How many apples does he have now? 3 + 5 = 8. The answer is 8.",
    "Wait, the problem has changed. The new problem is: Solving the new problem:",
    "Question: Answer: 0 1 2 3 4 5 6 7 8 9 10 100 \\boxed{} + - * / = .",
]


def build_tiny_model_folder(folder: Path, vocab_size: int = 384) -> Path:
    """A tiny random Llama with a trained BPE tokenizer saved as a real Hugging Face folder (config,
    safetensors, tokenizer), so loading and the command line run exactly as with a Hub model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- engine references


def full_log_probs(model, ids):
    """fp32 log-distributions of one forward pass over one unpadded sequence."""
    import torch

    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def no_stop(tokenizer):
    from kvinject.model_adapters.engine.tokens import StopRule

    return StopRule(tokenizer, frozenset(), ())


def prompt_cache(model, ids, offset):
    """The RowCache of ``ids`` computed by one forward at positions offset, offset + 1, ...: keys
    rotated directly to those positions by the model itself."""
    import torch
    from transformers import DynamicCache

    from kvinject.model_adapters.engine.row_cache import RowCache

    cache = DynamicCache(config=model.config)
    positions = torch.arange(len(ids))[None] + offset
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]), position_ids=positions, cache=cache, use_cache=True)
    return RowCache(tuple((layer.keys[0], layer.values[0]) for layer in cache.layers))


def assert_forked_append_matches_one_forward_pass(model, tokenizer, prompts, feeds, point, budget,
                                                  tolerance=TOLERANCE):
    """Greedy decoding through the engine's cache picks the argmax of a full forward pass at every
    step, and appending ``feeds`` to the baselines' caches forked after ``point`` tokens (one ragged
    batch) gives the logits of one forward pass over prompt + first ``point`` ids + feed.
    Returns the full contexts that were checked."""
    import torch

    from kvinject.model_adapters.engine.decoding import DecodeRow, greedy_decode
    from kvinject.model_adapters.engine.row_cache import PaddedBatch

    rows = [DecodeRow(None, tuple(p), budget, no_stop(tokenizer), capture_after=frozenset({point})) for p in prompts]
    baselines = greedy_decode(model, rows)
    for prompt, result in zip(prompts, baselines):
        assert full_log_probs(model, prompt + result.new_ids)[len(prompt) - 1 : -1].argmax(-1).tolist() == result.new_ids
    batch = PaddedBatch(model, [r.captures[point] for r in baselines])
    with torch.no_grad():
        logits = model(**batch.feed_tokens(feeds)).logits
    contexts = []
    for row, (prompt, result, feed) in enumerate(zip(prompts, baselines, feeds)):
        ids = prompt + result.new_ids[:point] + feed
        with torch.no_grad():
            reference = model(input_ids=torch.tensor([ids])).logits[0, -len(feed) :]
        assert (logits[row, -len(feed) :] - reference).abs().max().item() <= tolerance
        contexts.append(ids)
    return contexts


def incremental_greedy(model, prompt: list[int], budget: int):
    """Greedy ids and their decode-time log-distributions from a plain one-row incremental loop with
    transformers' own cache: the reference the engine's scores are held to."""
    import torch
    from transformers import DynamicCache

    decode_steps, ids, cache = [], list(prompt), DynamicCache(config=model.config)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True).logits[0, -1]
        for _ in range(budget):
            decode_steps.append(torch.log_softmax(logits.float(), -1))
            ids.append(int(logits.argmax()))
            logits = model(input_ids=torch.tensor([[ids[-1]]]), cache=cache, use_cache=True).logits[0, -1]
    return ids[len(prompt) :], decode_steps


def old_context_against_decode(model, tokenizer, prompt, point, budget, batch_with=()):
    """(the baseline's decode-time log-distributions after `point`, the old-context scores of the same
    tokens as the engine computes them: a row from the baseline's fork teacher-forced along a leader
    that decodes them, in one loop with the decode rows `batch_with`)."""
    import torch

    from kvinject.model_adapters.engine.decoding import DecodeRow, DecodingLoop, greedy_decode

    generated, decode_steps = incremental_greedy(model, prompt, budget)
    stop = no_stop(tokenizer)
    fork = greedy_decode(model, [DecodeRow(None, tuple(prompt), budget, stop, capture_after=frozenset({point}))])[0]
    assert fork.new_ids == generated
    old_ids = prompt + generated[:point]
    scored = []

    def observe(step):
        row = next(row for row, result in enumerate(step.results) if result is old)
        scored.append(torch.log_softmax(step.logits[row].float(), -1))

    loop = DecodingLoop(model, observer=observe)
    leader = loop.add(DecodeRow(None, tuple(old_ids), budget - point, stop))  # the same context, prefilled whole
    old = loop.add(DecodeRow(fork.captures[point].head(len(old_ids) - 1), tuple(old_ids[-1:]), 1, stop),
                   leader=leader, observed=True)
    for row in batch_with:
        loop.add(row)
    while loop.running:
        loop.step()
    assert leader.new_ids == old.new_ids == generated[point:]
    return torch.stack(decode_steps[point:]), torch.stack(scored[: len(leader.new_ids)])


def assert_same_trace(left, right, path="trace", abs_tol=1e-4):
    """Equal structure and ids; floats within ``abs_tol``."""
    if isinstance(left, float) or isinstance(right, float):
        assert math.isclose(left, right, rel_tol=0, abs_tol=abs_tol), path
    elif isinstance(left, dict):
        assert left.keys() == right.keys(), path
        for key in left:
            assert_same_trace(left[key], right[key], f"{path}.{key}", abs_tol)
    elif isinstance(left, list):
        assert len(left) == len(right), path
        for index, (a, b) in enumerate(zip(left, right)):
            assert_same_trace(a, b, f"{path}[{index}]", abs_tol)
    else:
        assert left == right, path


# ----------------------------------------------------------------------------------- metric fixtures
# Valid schema-1 traces (docs/architecture.md section 3) from a few arrays, built with the schema's
# own builders and checked by validate_trace, so a metric test states only the series it cares about.

ORIGINAL_IDS = [1, 11, 12, 13, 14]
ALTERNATIVE_IDS = [1, 11, 12, 23, 14]


def _per_token(value, length: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=float), (length,)).copy()


def _by_token_and_layer(value) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    return array[:, None] if array.ndim == 1 else array


def attention_segments(injected, original, sink=0.25, n_layers=2, length=None) -> dict:
    """Attention {segment: (T, n_layers)} whose non-sink share is split as given.

    injected / original: the sink-excluded mass of the injected segment / original prompt, per
    token (T,) or per token and layer (T, n_layers) (also in run_series); the rest goes half to
    each generated segment.
    """
    injected, original = (_by_token_and_layer(mass) for mass in (injected, original))
    shape = (length if length is not None else injected.shape[0], n_layers)
    injected, original = np.broadcast_to(injected, shape), np.broadcast_to(original, shape)
    rest = (1.0 - injected - original) / 2
    non_sink = 1.0 - sink
    masses = {"sink": np.full(shape, sink), "original_prompt": original * non_sink,
              "generated_before": rest * non_sink, "injected": injected * non_sink,
              "generated_after": rest * non_sink}
    return {name: masses[name].tolist() for name in SEGMENTS}


def run_series(kl_run_old, kl_run_new=None, *, logp_old=None, logp_new=None,
               injected_mass=None, original_mass=None, hidden_cos_new=None, n_layers=2,
               track_attention=True, track_hidden=True) -> dict:
    """The "series" of one run from per-token arrays (scalars broadcast over the run).

    kl_run_new defaults to 1 - nothing else is needed by most tests; log-probabilities default to
    -1 (log-ratio 0); attention masses to 0.3 injected / 0.3 original; hidden cosines to 0.5.
    """
    kl_run_old = np.asarray(kl_run_old, dtype=float)
    length = kl_run_old.size
    series = {
        "logp_run": _per_token(-0.1, length).tolist(),
        "logp_old": _per_token(-1.0 if logp_old is None else logp_old, length).tolist(),
        "logp_new": _per_token(-1.0 if logp_new is None else logp_new, length).tolist(),
        "kl_run_new": _per_token(1.0 if kl_run_new is None else kl_run_new, length).tolist(),
        "kl_run_old": kl_run_old.tolist(),
        "kl_old_new": _per_token(1.0, length).tolist(),
        "entropy_run": _per_token(1.0, length).tolist(),
    }
    if track_attention:
        masses = [0.3 if mass is None else mass for mass in (injected_mass, original_mass)]
        series["attention"] = attention_segments(
            *(mass if np.ndim(mass) == 2 else _per_token(mass, length) for mass in masses),
            n_layers=n_layers, length=length)
    if track_hidden:
        cosines = np.asarray(0.5 if hidden_cos_new is None else hidden_cos_new, dtype=float)
        if cosines.ndim < 2:
            cosines = np.broadcast_to(_per_token(cosines, length)[:, None], (length, n_layers))
        series["hidden_cos_new"] = cosines.tolist()
        series["hidden_cos_old"] = (1.0 - np.asarray(cosines)).tolist()
    return series


def _generated(prompt: str, ids: list[int], stop_reason: str = "max_new_tokens") -> dict:
    return condition(prompt, ids, " ".join(map(str, ids)), stop_reason)


def _injection_entry(point: int, series: dict | None, noise: bool, stop_reason: str, track_attention: bool,
                     track_hidden: bool) -> dict:
    pre_ids = list(range(100, 100 + point))
    noise_kind = "random" if noise else None
    if series is None:  # the baseline stopped before N tokens: the run is the baseline
        reason = f"baseline stopped after 2 tokens (eos) before N={point}"
        return injection_condition(_generated("original", pre_ids[:2]), point, injected_ids=[], injected_text="",
                                   pre_ids=pre_ids[:2], post_ids=[], series=empty_series(track_attention, track_hidden),
                                   not_injected_reason=reason, noise_kind=noise_kind)
    post_ids = list(range(200, 200 + len(series["kl_run_old"])))
    return injection_condition(_generated("original", pre_ids + post_ids, stop_reason), point, injected_ids=[7, 8, 9],
                               injected_text="7 8 9", pre_ids=pre_ids, post_ids=post_ids, series=series,
                               noise_kind=noise_kind)


def build_trace(runs: dict, *, doc_id: str = "doc-0", control: bool = False,
                injection_points=None, track_attention: bool = True,
                track_hidden: bool = True, stop_reasons=("max_new_tokens", "max_new_tokens")) -> dict:
    """A schema-1 trace, checked by validate_trace.

    runs: {N: (injection series, noise series)} from run_series; (None, None) for an injection
    point the baseline never reached (injected: false). control: the alternative prompt equals
    the original (an identical-problem control). injection_points default to the keys of runs.
    stop_reasons: (injection, noise) stop_reason of every point, or {N: (injection, noise)}.
    """
    from kvinject.trace_schema import validate_trace

    conditions = {"baseline": _generated("original", list(range(100, 120))),
                  "oracle": _generated("alternative", list(range(300, 320)))}
    for point, (injection, noise) in runs.items():
        reasons = stop_reasons[point] if isinstance(stop_reasons, dict) else stop_reasons
        conditions[f"injection@{point}"] = _injection_entry(point, injection, False, reasons[0], track_attention,
                                                            track_hidden)
        conditions[f"noise@{point}"] = _injection_entry(point, noise, True, reasons[1], track_attention, track_hidden)
    settings = {"injection_points": list(injection_points or runs), "strategy": "append", "noise": "random",
                "track_attention": track_attention, "track_hidden": track_hidden, "seed": 1234,
                "max_new_tokens": 64, "stop_sequences": ["\n\n"]}
    prompts = {"original": {"text": "original", "ids": list(ORIGINAL_IDS)},
               "alternative": {"text": "original" if control else "alternative",
                               "ids": list(ORIGINAL_IDS if control else ALTERNATIVE_IDS)}}
    trace = json.loads(json.dumps(schema_trace(doc_id, settings, prompts, conditions)))  # as a JSON round trip gives
    validate_trace(trace)
    return trace


def build_answers(points, *, baseline_old=True, oracle_new=True, injection=(True, False),
                  noise=(False, True)) -> dict:
    """answers as the task's matcher gives them; injection / noise: ("new", "old") matches, the
    same for every point or a {N: (new, old)} mapping."""
    def entry(new, old):
        return {"answer": "42", "new": new, "old": old}

    answers = {"baseline": entry(False, baseline_old), "oracle": entry(oracle_new, False)}
    for point in points:
        for name, matches in (("injection", injection), ("noise", noise)):
            new, old = matches[point] if isinstance(matches, dict) else matches
            answers[f"{name}@{point}"] = entry(new, old)
    return answers


def windowed_model(family: str, window: int, attention: str | None = None):
    """A tiny sliding-window model whose window is shorter than the test sequences."""
    model = build_tiny_model(family)
    model.config.sliding_window = window
    for module in model.modules():  # Gemma attention modules copy the window at init
        if getattr(module, "sliding_window", None) is not None:
            module.sliding_window = window
    if attention is not None:
        model.set_attn_implementation(attention)
    return model


# ---------------------------------------------------------------------------- harness requests

GEN_KWARGS = {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}


def request(doc_id, question="What is 3 + 5?", alternative="What is 4 + 5?", gen_kwargs=GEN_KWARGS):
    """An lm-eval generate_until request of the adaptation_semantic task, as lm-eval builds it."""
    from lm_eval.api.instance import Instance

    doc = {"id": doc_id, "original_question": question, "alternative_question": alternative}
    return Instance(
        request_type="generate_until",
        doc=doc,
        arguments=(f"Question: {question}\nAnswer:", dict(gen_kwargs)),
        idx=0,
        metadata=("adaptation_semantic", doc_id, 1),
    )


def stored_docs(store) -> int:
    """Docs in a result store file (0 before it exists), read without the store class."""
    import sqlite3

    try:
        with sqlite3.connect(store, timeout=30) as connection:
            return connection.execute("SELECT count(*) FROM traces").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
