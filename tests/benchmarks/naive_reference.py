"""The yardstick: the same analysis as the engine, written the obvious way.

Every condition is re-prompted from scratch with ``model.generate`` (attentions returned at every
step, as a user who wants them would ask), one doc at a time, and every post-injection token is
re-scored by full forward passes over the run, old and new contexts. It reuses the engine's
tokenisation, control segments and per-token reductions so that its numbers are comparable (the
benchmark checks that it produces the engine's greedy tokens); it does not reuse any cache.
Append strategy, no stop sequences (branches stop at their budget or at the model's EOS).
"""
from __future__ import annotations

import torch

from kvinject.model_adapters.engine.attention import attention_weights
from kvinject.model_adapters.engine.divergence import cosine_similarity, entropy, kl_divergence, log_probs
from kvinject.model_adapters.engine.noise import control_seed, control_segment, non_special_ids
from kvinject.model_adapters.engine.tokens import encode_prompt, encode_segment
from kvinject.model_adapters.injection_settings import InjectionSettings
from kvinject.trace_schema import SEGMENTS, empty_series

SINK, ORIGINAL_PROMPT, GENERATED_BEFORE, INJECTED, GENERATED_AFTER = range(len(SEGMENTS))


@torch.inference_mode()
def naive_analysis(model, tokenizer, problem, settings: InjectionSettings) -> dict:
    """{condition name: {"ids": generated ids, "series": per-token numbers (injections only)}}."""
    if settings.strategy != "append" or problem.stop_sequences:
        raise ValueError("the naive reference covers the append strategy without stop sequences")
    original = encode_prompt(tokenizer, problem.original_prompt)
    alternative = encode_prompt(tokenizer, problem.alternative_prompt)
    injected = encode_segment(tokenizer, problem.injection_text)
    vocab = min(len(tokenizer), model.get_input_embeddings().num_embeddings)
    allowed = non_special_ids(vocab, tokenizer.all_special_ids)
    budget = problem.max_new_tokens
    with attention_weights(model, True):
        baseline = _generate(model, original, budget)
        results = {"baseline": {"ids": baseline}, "oracle": {"ids": _generate(model, alternative, budget)}}
        for point in settings.injection_points:
            if len(baseline) <= point:
                continue
            pre = baseline[:point]
            control = control_segment(settings.noise, injected, allowed, control_seed(settings.seed, problem.doc_id, point))
            for name, segment in ((f"injection@{point}", injected), (f"noise@{point}", control)):
                run = original + pre + segment
                labels = [SINK] + [ORIGINAL_PROMPT] * (len(original) - 1) + [GENERATED_BEFORE] * len(pre) + [INJECTED] * len(segment)
                post = _generate(model, run, budget - point)
                series = _rescore(model, run, labels, original + pre, alternative + pre, post, settings)
                results[name] = {"ids": pre + post, "series": series}
    return results


def _generate(model, ids: list[int], max_new_tokens: int) -> list[int]:
    inputs = torch.tensor([ids], device=model.device)
    out = model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
                         do_sample=False, output_attentions=True, return_dict_in_generate=True, pad_token_id=0)
    return out.sequences[0, len(ids):].tolist()


def _last_position(model, ids: list[int]):
    out = model(torch.tensor([ids], device=model.device), output_attentions=True, output_hidden_states=True)
    return (log_probs(out.logits[0, -1]), [a[0, :, -1].float().mean(0) for a in out.attentions],
            [h[0, -1] for h in out.hidden_states[1:]])


def _rescore(model, run, labels, old, new, post, settings) -> dict:
    """Token t of ``post`` scored by three full forward passes over each context + post[:t]."""
    series = empty_series(settings.track_attention, settings.track_hidden)
    for t, target in enumerate(post):
        logp_run, attention, hidden_run = _last_position(model, run + post[:t])
        logp_old, _, hidden_old = _last_position(model, old + post[:t])
        logp_new, _, hidden_new = _last_position(model, new + post[:t])
        for key, value in (("logp_run", logp_run[target]), ("logp_old", logp_old[target]),
                           ("logp_new", logp_new[target]), ("kl_run_new", kl_divergence(logp_run, logp_new)),
                           ("kl_run_old", kl_divergence(logp_run, logp_old)),
                           ("kl_old_new", kl_divergence(logp_old, logp_new)), ("entropy_run", entropy(logp_run))):
            series[key].append(value.item())
        if settings.track_attention:
            slot_labels = torch.tensor(labels + [GENERATED_AFTER] * t, device=model.device)
            for index, segment in enumerate(SEGMENTS):
                series["attention"][segment].append([layer[slot_labels == index].sum().item() for layer in attention])
        if settings.track_hidden:
            series["hidden_cos_new"].append([cosine_similarity(r, n).item() for r, n in zip(hidden_run, hidden_new)])
            series["hidden_cos_old"].append([cosine_similarity(r, o).item() for r, o in zip(hidden_run, hidden_old)])
    return series
