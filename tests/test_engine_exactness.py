"""The engine against full recomputation, per model family (tiny random fp32 models on CPU)."""
import pytest
import torch
from transformers import DynamicCache

from kvinject.model_adapters.engine import InjectionSettings, InjectionEngine, Problem
from kvinject.trace_schema import validate_trace
from kvinject.model_adapters.engine.decoding import DecodeRow, greedy_decode
from kvinject.model_adapters.engine.divergence import kl_divergence
from kvinject.model_adapters.engine.rope import rerotate_keys
from kvinject.model_adapters.engine.row_cache import PaddedBatch, RowCache
from kvinject.model_adapters.engine.scoring import ScoringContext, teacher_forced_chunks
from kvinject.model_adapters.engine.tokens import StopRule

TOLERANCE = 1e-4
PROBLEMS = [
    Problem("short", "Q: 2+2?", "Q: 7+5, then 3?", "New: 7+5, then 3", 7),
    Problem("long", "Question: Tom has 3 apples. A:", "Question: Tom has 9 pears. A:", "Now 9 pears!", 7),
]


def full_log_probs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def no_stop(tokenizer):
    return StopRule(tokenizer, frozenset(), ())


def test_forked_append_logits_match_one_forward_pass(tiny_family_model, tiny_tokenizer):
    _, model = tiny_family_model
    prompts = [tiny_tokenizer.encode(p.original_prompt) for p in PROBLEMS]
    point = 3
    baselines = greedy_decode(
        model, [DecodeRow(None, tuple(p), 6, no_stop(tiny_tokenizer), capture_after=frozenset({point})) for p in prompts], "t"
    )
    # Greedy decoding through the cache picks the argmax of a full forward pass at every step.
    for prompt, result in zip(prompts, baselines):
        logits = full_log_probs(model, prompt + result.new_ids)[len(prompt) - 1 : -1]
        assert logits.argmax(-1).tolist() == result.new_ids

    feeds = [tiny_tokenizer.encode(" New: 9", add_special_tokens=False) + [40, 41], [50, 51, 52]]
    batch = PaddedBatch(model, [r.captures[point] for r in baselines], "t")
    with torch.no_grad():
        logits = model(**batch.feed_tokens(feeds)).logits
    for row, (prompt, result, feed) in enumerate(zip(prompts, baselines, feeds)):
        ids = prompt + result.new_ids[:point] + feed
        with torch.no_grad():
            reference = model(input_ids=torch.tensor([ids])).logits[0, -len(feed) :]
        assert (logits[row, -len(feed) :] - reference).abs().max().item() <= TOLERANCE


def run_engine(model, tokenizer, problems=PROBLEMS, batch_size=2, **settings):
    settings = {"injection_points": (0, 3), **settings}
    traces = InjectionEngine(model, tokenizer, InjectionSettings(**settings), batch_size=batch_size).run(problems)
    for trace in traces:
        validate_trace(trace)
    return traces


def test_append_trace_scores_match_full_recomputation(tiny_family_model, tiny_tokenizer):
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


def incremental_greedy(model, prompt: list[int], budget: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy ids and their decode-time log-distributions from a plain one-row incremental loop with
    transformers' own cache: the reference the engine's scores are held to."""
    decode_steps, ids, cache = [], list(prompt), DynamicCache(config=model.config)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True).logits[0, -1]
        for _ in range(budget):
            decode_steps.append(torch.log_softmax(logits.float(), -1))
            ids.append(int(logits.argmax()))
            logits = model(input_ids=torch.tensor([[ids[-1]]]), cache=cache, use_cache=True).logits[0, -1]
    return ids[len(prompt) :], decode_steps


def old_context_against_decode(model, tokenizer, prompt, point, budget, batch_with=()):
    """(the baseline's decode-time log-distributions after `point`, the teacher-forced old-context
    scores of the same tokens from the engine's fork), scored in one batch with the (context, query
    count) pairs of `batch_with`."""
    generated, decode_steps = incremental_greedy(model, prompt, budget)
    fork = greedy_decode(model, [DecodeRow(None, tuple(prompt), budget, no_stop(tokenizer),
                                           capture_after=frozenset({point}))], "t")[0]
    assert fork.new_ids == generated
    post = generated[point:]
    old_ids = prompt + generated[:point]
    context = ScoringContext(fork.captures[point].head(len(old_ids) - 1), tuple(old_ids[-1:] + post[:-1]))
    contexts = [context] + [c for c, _ in batch_with]
    queries = [len(post)] + [n for _, n in batch_with]
    scored = []
    with torch.no_grad():
        for _, _, out, _ in teacher_forced_chunks(model, contexts, queries, "t"):
            scored.append(torch.log_softmax(out.logits[0].float(), -1))
    return torch.stack(decode_steps[point:]), torch.cat(scored)[-len(post) :]


def test_old_context_along_baseline_tokens_equals_decode_distributions(tiny_family_model, tiny_tokenizer):
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


def test_replace_reproduces_oracle_at_zero_and_baseline_when_identical(tiny_family_model, tiny_tokenizer):
    family, model = tiny_family_model
    if family == "gpt2":  # absolute positions: generated tokens cannot be moved
        with pytest.raises(ValueError, match="strategy=replace is not supported for gpt2"):
            InjectionEngine(model, tiny_tokenizer, InjectionSettings(strategy="replace"))
        return
    traces = run_engine(model, tiny_tokenizer, strategy="replace", injection_points=(0, 3))
    for trace in traces:
        conditions = trace["conditions"]
        assert conditions["injection@0"]["ids"] == conditions["oracle"]["ids"]
        assert conditions["injection@0"]["injected_ids"] == trace["prompts"]["alternative"]["ids"]
        replaced = conditions["injection@3"]
        assert replaced["pre_ids"] == conditions["baseline"]["ids"][:3]
        assert_replace_run_matches_shifted_recomputation(model, trace, replaced)
        attention = replaced["series"]["attention"]
        assert max(max(row) for row in attention["original_prompt"]) == 0
        assert min(min(row) for row in attention["injected"]) > 0
        # The control swaps in a length-matched control prompt.
        assert len(conditions["noise@3"]["injected_ids"]) == len(trace["prompts"]["alternative"]["ids"])
    same = [Problem(p.doc_id, p.original_prompt, p.original_prompt, "", 7) for p in PROBLEMS]
    for trace in run_engine(model, tiny_tokenizer, same, strategy="replace", injection_points=(0, 2, 4)):
        for point in (0, 2, 4):
            assert trace["conditions"][f"injection@{point}"]["ids"] == trace["conditions"]["baseline"]["ids"]


def assert_replace_run_matches_shifted_recomputation(model, trace, entry):
    """Reference for replace@N without re-rotation: the alternative prompt's K/V, then the generated
    tokens' K/V from a forward over original prompt + pre_ids whose positions are shifted by the
    length change (same content, new positions); the last generated token is fed again."""
    original, alternative = trace["prompts"]["original"]["ids"], trace["prompts"]["alternative"]["ids"]
    pre, post = entry["pre_ids"], entry["post_ids"]
    shift = len(alternative) - len(original)
    assert shift != 0 and post
    moved = prompt_cache(model, original + pre, shift).tail(len(original))
    context = prompt_cache(model, alternative, 0).then(moved).head(len(alternative) + len(pre) - 1)
    cache = DynamicCache(ddp_cache_data=[(k[None], v[None]) for k, v in context.layers], config=model.config)
    feed = pre[-1:] + post[:-1]
    positions = torch.arange(len(feed))[None] + context.length
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([feed]), position_ids=positions, cache=cache, use_cache=True).logits[0]
    log_probs = torch.log_softmax(logits.float(), -1)
    assert log_probs.argmax(-1).tolist() == post
    expected = log_probs.gather(1, torch.tensor(post)[:, None])[:, 0]
    assert torch.tensor(entry["series"]["logp_run"]).sub(expected).abs().max().item() <= TOLERANCE


def prompt_cache(model, ids, offset):
    cache = DynamicCache(config=model.config)
    positions = torch.arange(len(ids))[None] + offset
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]), position_ids=positions, cache=cache, use_cache=True)
    return RowCache(tuple((layer.keys[0], layer.values[0]) for layer in cache.layers))


@pytest.mark.parametrize("family", ["qwen2", "llama", "mistral", "gemma2", "gemma3_text", "phi3", "qwen3"])
def test_rerotated_keys_equal_keys_computed_at_the_new_positions(family, tiny_model_builder, tiny_tokenizer):
    model = tiny_model_builder(family)
    ids = tiny_tokenizer.encode("Tom has 3 apples and 4 pears.")
    # Shifting every position leaves relative positions, hence hidden states, unchanged: only the
    # rotation of the keys differs, which is what re-rotation must reproduce.
    for start, target in ((0, 7), (9, 2)):
        moved = rerotate_keys(model, prompt_cache(model, ids, start), target - start)
        expected = prompt_cache(model, ids, target)
        for (keys, values), (keys_ref, values_ref) in zip(moved.layers, expected.layers):
            assert (keys - keys_ref).abs().max().item() <= TOLERANCE
            assert (values - values_ref).abs().max().item() <= TOLERANCE
    assert not torch.equal(prompt_cache(model, ids, 0).layers[0][0], prompt_cache(model, ids, 7).layers[0][0])
