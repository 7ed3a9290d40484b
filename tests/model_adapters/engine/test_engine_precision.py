"""The engine in float32, bfloat16 and float16 on the CPU (tiny random models).

Exactness tolerances per precision (what each can resolve; metrics/README.md "Precision"):
- forked append vs one forward pass over the concatenated ids, both in the model's dtype: logits
  within helpers.LOGIT_TOLERANCE[dtype] x max(1, max |logit|) (float32: 1e-4 absolute, the instrument's
  contract; 16-bit: a few units in the last place of the largest logit; measured on these models:
  bf16 <= 7.8e-3, fp16 <= 1.0e-3 relative);
- trace series of a 16-bit model vs a float32 forward pass of the same weights over the same ids
  (the measure's error from running in 16-bit; scoring runs in the model's dtype, inside the
  decoding loop): SERIES_TOLERANCE;
- identical contexts (old and new of an identical control) give bit-identical series in every
  precision: the old and new contexts are computed the same way, so rounding cannot tell them apart.
"""
import pytest
import torch
from helpers import TOLERANCE

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.model_adapters.engine.decoding import DecodeRow, greedy_decode
from kvinject.model_adapters.engine.divergence import kl_divergence
from kvinject.model_adapters.engine.row_cache import PaddedBatch

PRECISIONS = [torch.float32, torch.bfloat16, torch.float16]
FAMILIES = ("llama", "gemma3_text", "gpt2")  # half-split rotary, sliding-capable with norms, absolute positions
# per series key group: (logp_*, kl_*) absolute, nats; measured with scoring in the model's dtype (inside
# the decoding loop): bf16 <= (1.4e-2, 2.6e-3), fp16 <= (2.6e-3, 3.0e-4) (float32 scoring gave (1.0e-2,
# 1.2e-3) and (1.3e-3, 2.3e-4))
SERIES_TOLERANCE = {torch.float32: (TOLERANCE, TOLERANCE), torch.bfloat16: (3e-2, 5e-3), torch.float16: (5e-3, 1e-3)}
PROBLEMS = [
    Problem("short", "Q: 2+2?", "Q: 7+5, then 3?", "New: 7+5, then 3", 7),
    Problem("long", "Question: Tom has 3 apples. A:", "Question: Tom has 9 pears. A:", "Now 9 pears!", 7),
]
SETTINGS = InjectionSettings(injection_points=(0, 3), track_attention=False, track_hidden=False)


def precision_id(dtype):
    return str(dtype).removeprefix("torch.")


@pytest.fixture(params=PRECISIONS, ids=precision_id)
def dtype(request):
    return request.param


@pytest.mark.parametrize("family", FAMILIES)
def test_forked_append_matches_one_forward_pass_in_each_precision(family, dtype, logit_tolerance, no_stop,
                                                                  tiny_model_builder, tiny_tokenizer_class):
    tokenizer = tiny_tokenizer_class(eos_token_id=None)
    model = tiny_model_builder(family).to(dtype)
    prompts = [tokenizer.encode(p.original_prompt) for p in PROBLEMS]
    feeds = [tokenizer.encode(" New: 9", add_special_tokens=False) + [40, 41], [50, 51, 52]]
    rows = [DecodeRow(None, tuple(p), 6, no_stop(tokenizer), capture_after=frozenset({3})) for p in prompts]
    baselines = greedy_decode(model, rows)
    batch = PaddedBatch(model, [r.captures[3] for r in baselines])
    with torch.no_grad():
        logits = model(**batch.feed_tokens(feeds)).logits.float()
    for row, (prompt, result, feed) in enumerate(zip(prompts, baselines, feeds)):
        with torch.no_grad():
            reference = model(input_ids=torch.tensor([prompt + result.new_ids[:3] + feed])).logits[0, -len(feed):].float()
        tolerance = logit_tolerance(dtype, reference.abs().max().item())
        assert (logits[row, -len(feed):] - reference).abs().max().item() <= tolerance


@pytest.mark.parametrize("family", FAMILIES)
def test_trace_series_match_a_float32_forward_pass_in_each_precision(family, dtype, full_log_probs, tiny_model_builder,
                                                                     tiny_tokenizer_class):
    tokenizer = tiny_tokenizer_class(eos_token_id=None)
    reference_model = tiny_model_builder(family)
    model = tiny_model_builder(family).to(dtype)
    logp_tolerance, kl_tolerance = SERIES_TOLERANCE[dtype]
    checked = 0
    for trace in InjectionEngine(model, tokenizer, SETTINGS, batch_size=2).run(PROBLEMS):
        original, alternative = trace["prompts"]["original"]["ids"], trace["prompts"]["alternative"]["ids"]
        for name, entry in trace["conditions"].items():
            if "@" not in name:
                continue
            pre, post, injected, series = entry["pre_ids"], entry["post_ids"], entry["injected_ids"], entry["series"]
            start = len(original + pre + injected) - 1
            run = full_log_probs(reference_model, original + pre + injected + post)[start : start + len(post)]
            old = full_log_probs(reference_model, original + pre + post)[len(original + pre) - 1 : -1]
            new = full_log_probs(reference_model, alternative + pre + post)[len(alternative + pre) - 1 : -1]
            targets = torch.tensor(post)[:, None]
            expected = {"logp_run": (run.gather(1, targets)[:, 0], logp_tolerance),
                        "logp_old": (old.gather(1, targets)[:, 0], logp_tolerance),
                        "kl_run_new": (kl_divergence(run, new), kl_tolerance),
                        "kl_run_old": (kl_divergence(run, old), kl_tolerance),
                        "kl_old_new": (kl_divergence(old, new), kl_tolerance)}
            for key, (values, tolerance) in expected.items():
                assert torch.tensor(series[key]).sub(values).abs().max().item() <= tolerance, (name, key)
            checked += 1
    assert checked == 2 * 2 * 2


def test_identical_controls_score_old_and_new_bit_identically_in_each_precision(dtype, tiny_model_builder,
                                                                                tiny_tokenizer_class):
    tokenizer = tiny_tokenizer_class(eos_token_id=None)
    model = tiny_model_builder("llama").to(dtype)
    same = [Problem("same", "Q: 6 eggs, 2 eaten?", "Q: 6 eggs, 2 eaten?", "Again: 6 eggs", 6),
            Problem("other", "Question: Tom has 3 apples. A:", "Question: Tom has 9 pears. A:", "Now 9 pears!", 6)]
    trace = InjectionEngine(model, tokenizer, SETTINGS, batch_size=2).run(same)[0]
    assert trace["settings"]["score_dtype"] == trace["settings"]["dtype"] == precision_id(dtype)
    for name in ("injection@0", "injection@3", "noise@0", "noise@3"):
        series = trace["conditions"][name]["series"]
        assert series["kl_run_old"] == series["kl_run_new"] and series["logp_old"] == series["logp_new"], name
        assert max(series["kl_old_new"]) == 0.0, name


def test_greedy_ties_go_to_the_lowest_id_in_each_precision(dtype, no_stop, tiny_model_builder, tiny_tokenizer_class):
    """Exact ties are common in 16-bit logits: decoding breaks them one documented way (torch.argmax
    returns the first maximal index), whatever the batch."""
    tokenizer = tiny_tokenizer_class(eos_token_id=None)
    model = tiny_model_builder("llama")
    with torch.no_grad():
        head = model.lm_head.weight
        row = head[5].clone()
        head.zero_()  # every other id ties at logit 0
        head[5], head[7] = row, row  # ids 5 and 7 tie exactly at every step
    model = model.to(dtype)
    prompts = [tokenizer.encode(p.original_prompt) for p in PROBLEMS]
    rows = [DecodeRow(None, tuple(p), 6, no_stop(tokenizer)) for p in prompts]
    alone = [greedy_decode(model, [row])[0].new_ids for row in rows]
    together = [result.new_ids for result in greedy_decode(model, rows)]
    assert together == alone
    assert {i for ids in alone for i in ids} <= {0, 5}  # the lowest id among the maxima: never 7
