"""The engine against full recomputation, per model family (tiny random fp32 models on CPU)."""
import pytest
import torch
from helpers import TINY_FAMILIES, TOLERANCE

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.model_adapters.engine.divergence import kl_divergence
from kvinject.model_adapters.engine.tokens import encode_prompt, encode_segment
from kvinject.trace_schema import validate_trace

PROBLEMS = [
    Problem("short", "Q: 2+2?", "Q: 7+5, then 3?", "New: 7+5, then 3", 7),
    Problem("long", "Question: Tom has 3 apples. A:", "Question: Tom has 9 pears. A:", "Now 9 pears!", 7),
]
WINDOW = 8  # sliding-window cases: every checked context is several windows long
# Gemma 2 has no sdpa kernel in transformers (logit soft-capping): it runs eager only.
WINDOWED = [(f, a) for f in ("mistral", "gemma2", "gemma3_text") for a in ("sdpa", "eager") if (f, a) != ("gemma2", "sdpa")]
FORKED_APPEND_CASES = (
    [pytest.param("tiny", family, None, id=family) for family in TINY_FAMILIES]
    + [pytest.param("windowed", family, attention, id=f"{family}-window-{attention}") for family, attention in WINDOWED]
    + [pytest.param("smollm2", None, None, id="smollm2", marks=pytest.mark.slow)]
)


@pytest.mark.parametrize("kind,family,attention", FORKED_APPEND_CASES)
def test_forked_append_logits_match_one_forward_pass(kind, family, attention, request,
                                                     assert_forked_append_matches_one_forward_pass, tiny_model_builder,
                                                     tiny_tokenizer_class, windowed_model):
    """The one statement every strategy rests on: decoding through the engine's caches is greedy under
    full recomputation, and a segment appended to a cache forked after N tokens (ragged batch) gives
    the logits of one forward pass over the concatenated ids."""
    if kind == "smollm2":
        model, tokenizer = request.getfixturevalue("smollm2")
        question = "Tom has 3 apples and buys {} more. How many apples does he have now?"
        prompts = [encode_prompt(tokenizer, f"Question: {question.format(5)}\nAnswer:"),
                   encode_prompt(tokenizer, "Q: What is the capital of France?\nA:")]
        feeds = [encode_segment(tokenizer, "\n\nWait, the problem has changed. The new problem is: "
                                           f"{question.format(7)}\nSolving the new problem:"),
                 encode_segment(tokenizer, " Correction: the question is about Italy.")]
        assert_forked_append_matches_one_forward_pass(model, tokenizer, prompts, feeds, point=5, budget=8)
        return
    tokenizer = tiny_tokenizer_class(eos_token_id=None)
    if kind == "tiny":
        model = tiny_model_builder(family)
        prompts = [tokenizer.encode(p.original_prompt) for p in PROBLEMS]
        feeds = [tokenizer.encode(" New: 9", add_special_tokens=False) + [40, 41], [50, 51, 52]]
        assert_forked_append_matches_one_forward_pass(model, tokenizer, prompts, feeds, point=3, budget=6)
        return
    model = windowed_model(family, WINDOW, attention)
    prompts = [tokenizer.encode("Q: 2+2?"), tokenizer.encode("Question: Tom has 3 apples and 4 pears. A:")]
    feeds = [tokenizer.encode(" New: 9 pears and 7 plums", add_special_tokens=False), [50, 51, 52]]
    contexts = assert_forked_append_matches_one_forward_pass(model, tokenizer, prompts, feeds, point=20, budget=26)
    assert min(len(ids) for ids in contexts) > 3 * WINDOW


def run_engine(model, tokenizer, problems=PROBLEMS, batch_size=2, **settings):
    settings = {"injection_points": (0, 3), **settings}
    traces = InjectionEngine(model, tokenizer, InjectionSettings(**settings), batch_size=batch_size).run(problems)
    for trace in traces:
        validate_trace(trace)
    return traces


def test_append_trace_scores_match_full_recomputation(tiny_family_model, tiny_tokenizer, full_log_probs):
    _, model = tiny_family_model
    traces = run_engine(model, tiny_tokenizer)
    checked = 0
    for trace in traces:
        original, alternative = trace["prompts"]["original"]["ids"], trace["prompts"]["alternative"]["ids"]
        for name, entry in trace["conditions"].items():
            if "@" not in name:
                continue
            assert entry["injected"], name
            pre, post, injected = entry["pre_ids"], entry["post_ids"], entry["injected_ids"]
            series = entry["series"]
            run_start = len(original + pre + injected) - 1
            run = full_log_probs(model, original + pre + injected + post)[run_start : run_start + len(post)]
            old = full_log_probs(model, original + pre + post)[len(original + pre) - 1 : -1]
            new = full_log_probs(model, alternative + pre + post)[len(alternative + pre) - 1 : -1]
            targets = torch.tensor(post)[:, None]
            assert run.argmax(-1).tolist() == post  # the run is greedy under full recomputation
            expected = {
                "logp_run": run.gather(1, targets)[:, 0],
                "logp_old": old.gather(1, targets)[:, 0],
                "logp_new": new.gather(1, targets)[:, 0],
                "kl_run_new": kl_divergence(run, new),
                "kl_run_old": kl_divergence(run, old),
                "kl_old_new": kl_divergence(old, new),
                "entropy_run": -(run.exp() * run).sum(-1),
            }
            for key, values in expected.items():
                assert torch.tensor(series[key]).sub(values).abs().max().item() <= TOLERANCE, (name, key)
            layers = model.config.num_hidden_layers
            masses = torch.tensor([series["attention"][s] for s in series["attention"]])  # [segments, T, layers]
            assert masses.shape == (5, len(post), layers)
            assert masses.sum(0).sub(1).abs().max().item() <= 1e-5
            assert masses[3].min().item() > 0  # every query sees the injected segment
            assert masses[4, 0].abs().max().item() == 0  # the first query precedes all post tokens
            cosines = torch.tensor(series["hidden_cos_new"] + series["hidden_cos_old"])
            assert cosines.shape == (2 * len(post), layers) and cosines.abs().max().item() <= 1 + 1e-6
            checked += 1
    assert checked == 2 * 2 * 2  # docs x points x (injection, noise)


def test_old_context_along_baseline_tokens_equals_decode_distributions(tiny_family_model, tiny_tokenizer,
                                                                       old_context_against_decode):
    _, model = tiny_family_model
    prompt = tiny_tokenizer.encode(PROBLEMS[1].original_prompt)
    decoded, scored = old_context_against_decode(model, tiny_tokenizer, prompt, point=2, budget=7)
    assert kl_divergence(decoded, scored).max().item() < 1e-6


def test_identical_control_scores_old_and_new_alike(tiny_family_model, tiny_tokenizer):
    _, model = tiny_family_model
    same = [Problem("same", "Q: 6 eggs, 2 eaten?", "Q: 6 eggs, 2 eaten?", "Again: 6 eggs", 6)]
    (trace,) = run_engine(model, tiny_tokenizer, same)
    for name in ("injection@0", "noise@3"):
        series = trace["conditions"][name]["series"]
        assert torch.tensor(series["logp_old"]).sub(torch.tensor(series["logp_new"])).abs().max() <= 1e-5
        assert max(series["kl_old_new"]) < 1e-6
        assert torch.tensor(series["kl_run_old"]).sub(torch.tensor(series["kl_run_new"])).abs().max() <= 1e-5
        assert torch.tensor(series["hidden_cos_old"]).sub(torch.tensor(series["hidden_cos_new"])).abs().max() <= 1e-5
    assert trace["conditions"]["oracle"]["ids"] == trace["conditions"]["baseline"]["ids"]
