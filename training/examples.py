"""Supervised examples that teach a model to follow an update injected mid-generation.

For each doc (an engine ``Problem``, built from the task's rendered prompt exactly as ``--model
kvinject`` builds it) and one injection point N:

    context = encode_prompt(original prompt) + the baseline's first N generated ids
              + encode_segment(injection text)          (the ids append-injection@N feeds)
    target  = the oracle's generated ids (greedy, from the alternative prompt, up to and including
              its stop token), or the ids of a gold solution text followed by EOS

``input_ids = context + target`` and ``labels = [-100] * len(context) + target``: the loss is on the
target only. Segments are tokenised separately and their ids concatenated, never re-tokenised as
joined text, and the baseline and oracle are decoded by the engine's own greedy decoder, so the
context is token for token what the engine feeds at injection@N. A doc whose baseline stops before
N tokens is skipped (the engine would not inject there either), with the reason recorded.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from kvinject.model_adapters.engine import Problem
from kvinject.model_adapters.engine.decoding import DecodeRow, greedy_decode
from kvinject.model_adapters.engine.injection_engine import not_injected_reason
from kvinject.model_adapters.engine.tokens import StopRule, encode_prompt, encode_segment, eos_ids
from kvinject.training.config import TARGETS

IGNORE_INDEX = -100  # transformers' causal-LM loss ignores these label positions


@dataclasses.dataclass(frozen=True)
class TrainingExample:
    doc_id: str
    input_ids: list[int]
    labels: list[int]

    @property
    def n_target(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def supervised_example(doc_id: str, context: Sequence[int], target: Sequence[int]) -> TrainingExample:
    """A TrainingExample with the loss on ``target`` only (``context`` labelled IGNORE_INDEX); ValueError for an
    empty target."""
    if not target:
        raise ValueError(f"doc {doc_id}: empty target; nothing to learn")
    return TrainingExample(str(doc_id), list(context) + list(target), [IGNORE_INDEX] * len(context) + list(target))


def injected_context(tokenizer, problem: Problem, pre_ids: Sequence[int]) -> list[int]:
    """The ids append-injection@N runs on: prompt, the N baseline ids, then the injected segment."""
    return encode_prompt(tokenizer, problem.original_prompt) + list(pre_ids) + encode_segment(tokenizer, problem.injection_text)


def gold_target(tokenizer, text: str) -> list[int]:
    """A gold solution as a segment after the context, ended with EOS so the model learns to stop."""
    ids = encode_segment(tokenizer, text)
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def _greedy(model, rows: list[DecodeRow], batch_size: int):
    results = []
    for start in range(0, len(rows), batch_size):
        results.extend(greedy_decode(model, rows[start : start + batch_size]))
    return results


def build_examples(
    model, tokenizer, problems: Sequence[Problem], injection_point: int, target: str = "oracle",
    gold_texts: Mapping[str, str] | None = None, batch_size: int = 8,
) -> tuple[list[TrainingExample], dict[str, str]]:
    """(examples, skipped doc id -> reason). ``gold_texts`` maps doc id -> solution text (target=gold)."""
    if target not in TARGETS:
        raise ValueError(f"target={target!r}: expected one of {', '.join(TARGETS)}")
    if injection_point < 0:
        raise ValueError(f"injection_point={injection_point}: must be >= 0")
    if target == "gold":
        missing = [p.doc_id for p in problems if not (gold_texts or {}).get(p.doc_id)]
        if missing:
            raise ValueError(f"target=gold: no gold solution for doc(s) {', '.join(missing[:5])}")
    stop_ends = eos_ids(tokenizer, model)

    def stop(problem: Problem) -> StopRule:
        return StopRule(tokenizer, stop_ends, problem.stop_sequences)

    skipped: dict[str, str] = {}
    pre_ids = {p.doc_id: [] for p in problems}
    if injection_point > 0:
        # One token past N, as the engine's baseline decodes past N, so its rule applies as it stands.
        rows = [DecodeRow(None, tuple(encode_prompt(tokenizer, p.original_prompt)), injection_point + 1, stop(p))
                for p in problems]
        for problem, result in zip(problems, _greedy(model, rows, batch_size)):
            reason = not_injected_reason(len(result.new_ids), result.stop_reason, injection_point)
            if reason is not None:
                skipped[problem.doc_id] = reason
            pre_ids[problem.doc_id] = result.new_ids[:injection_point]
    kept = [p for p in problems if p.doc_id not in skipped]
    if target == "oracle":
        rows = [DecodeRow(None, tuple(encode_prompt(tokenizer, p.alternative_prompt)), p.max_new_tokens, stop(p)) for p in kept]
        targets = [result.new_ids for result in _greedy(model, rows, batch_size)]
    else:
        targets = [gold_target(tokenizer, gold_texts[p.doc_id]) for p in kept]
    examples = [
        supervised_example(p.doc_id, injected_context(tokenizer, p, pre_ids[p.doc_id]), ids)
        for p, ids in zip(kept, targets)
    ]
    return examples, skipped
