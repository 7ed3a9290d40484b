"""The injection engine: every condition of every problem, greedily, with counterfactual scores.

Contract: docs/architecture.md section 2 (API) and section 3 (the trace, schema version 1, built and
checked in kvinject/trace_schema.py: ``SCHEMA_VERSION``, ``validate_trace``). A batch of problems
runs in ONE decoding loop (decoding.py ``DecodingLoop``, continuous batching), one forward per step
over every active row of every doc:

1. the baseline (original prompt) and the oracle (alternative prompt) of every doc join at the first
   step, both starting from one cache of their common prompt prefix (prefilled once; each still feeds
   at least its last prompt token); the baseline's cache is copied after N generated tokens for each
   injection point N (forked, never recomputed) and the oracle's after its prompt;
2. right after the step that forks the baseline at N, injection@N and noise@N join the same loop:
   ``append`` feeds the injected (or control) ids after the N tokens; ``replace`` swaps the prompt
   region for the alternative prompt's cache (or a length-matched control prompt, prefilled before
   the loop), moves the N generated tokens' keys to their shifted positions (rope.py) and re-feeds
   the last token so the first post-injection prediction is made in the new context (at N=0 this is
   the oracle exactly). A branch has max_new_tokens - N tokens left, so the loop ends after about
   max_new_tokens + 1 steps whatever the points; rows leave when they stop;
3. each branch brings two more rows, its old and new contexts, teacher-forced along the branch's
   tokens in the same steps (scoring.py ``LoopScoring``): every step is reduced at once to the
   per-token series, and the run's own numbers are its decoding step's.

The tokenizer only needs the small ``EngineTokenizer`` protocol (tokens.py). Prompts get the
tokenizer's special tokens as in lm-eval's HFLM; the injected segment is tokenised on its own.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from kvinject.model_adapters.engine.attention import attention_weights
from kvinject.model_adapters.engine.decoding import DecodeResult, DecodeRow, DecodingLoop, extend_caches
from kvinject.model_adapters.engine.noise import control_seed, control_segment, non_special_ids
from kvinject.model_adapters.engine.rope import RotaryKeys
from kvinject.model_adapters.engine.row_cache import RowCache
from kvinject.model_adapters.engine.scoring import LoopScoring
from kvinject.model_adapters.engine.tokens import (
    EngineTokenizer,
    StopRule,
    decode_generated,
    encode_prompt,
    encode_segment,
    eos_ids,
    truncate_at_stop,
)
from kvinject.model_adapters.injection_settings import InjectionSettings
from kvinject.trace_schema import (
    SEGMENTS,
    build_trace,
    condition,
    empty_series,
    injection_condition,
)

__all__ = ["Problem", "InjectionEngine", "EngineTokenizer"]

SINK, ORIGINAL_PROMPT, GENERATED_BEFORE, INJECTED, GENERATED_AFTER = range(len(SEGMENTS))


@dataclasses.dataclass(frozen=True)
class Problem:
    doc_id: str
    original_prompt: str
    alternative_prompt: str
    injection_text: str
    max_new_tokens: int
    stop_sequences: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Doc:
    """A validated, tokenised problem."""

    problem: Problem
    original_ids: list[int]
    alternative_ids: list[int]
    injected_ids: list[int]  # append: the injection text; replace: the alternative prompt
    controls: dict[int, list[int]]  # injection point -> length-matched control ids
    stop: StopRule


@dataclasses.dataclass(frozen=True)
class _Branch:
    """One injection@N or noise@N run that actually injects."""

    doc: _Doc
    point: int
    noise: bool
    segment: list[int]  # the injected ids of this run (append) or its new prompt region (replace)
    fork: RowCache  # the baseline's cache after original prompt + N generated tokens
    pre_ids: list[int]
    alternative: RowCache  # the alternative prompt's cache (from the oracle's prefill)
    region: RowCache | None  # replace: the cache of `segment` as a prompt


@dataclasses.dataclass(frozen=True)
class _PromptCaches:
    """A doc's original and alternative prompt caches without their last token (None: empty)."""

    original: RowCache | None
    alternative: RowCache | None


@dataclasses.dataclass
class _DocRun:
    """One doc's rows in the running loop."""

    doc: _Doc
    baseline: DecodeResult
    oracle: DecodeResult
    points: list[int]  # injection points not forked (nor dropped) yet, ascending


class InjectionEngine:
    """Runs every condition of a batch of problems on one model and returns one schema-1 trace each.

    ``run(problems)`` runs a batch in one decoding loop: the baseline and oracle from the first step,
    the injection and noise runs forked from the baseline as it reaches each injection point, and
    every post-injection token scored under the run, old and new contexts in the same steps (module
    docstring, steps 1-3), in the model's dtype (metrics/README.md, "Precision"); ``check(problems)``
    raises the tokenised input errors (empty segments, context too long) before any compute. Greedy
    decoding only; the settings (injection points, strategy, noise, tracking) are fixed per engine,
    the batch size may shrink. ``share_prompts``: every row of a doc continues its prompts' caches,
    held once, instead of holding a copy (row_cache.py; less memory, a per-step gather more).
    """

    def __init__(self, model, tokenizer: EngineTokenizer, settings: InjectionSettings, batch_size: int = 1,
                 share_prompts: bool = False):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
        # replace moves the generated tokens' keys; refused here, before any compute, where that is not exact.
        self.rotary_keys = RotaryKeys.from_model(model) if settings.strategy == "replace" else None
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.batch_size = batch_size
        self.share_prompts = share_prompts
        self.eos_ids = eos_ids(tokenizer, model)
        vocab = min(len(tokenizer), model.get_input_embeddings().num_embeddings)
        self.random_ids = non_special_ids(vocab, tokenizer.all_special_ids)

    def run(self, problems: Sequence[Problem]) -> list[dict]:
        """One schema-1 trace per problem, in order. Every problem is checked before any compute."""
        docs = [self._prepare(problem) for problem in problems]
        traces = []
        for start in range(0, len(docs), self.batch_size):
            traces.extend(self._run_batch(docs[start : start + self.batch_size]))
        return traces

    def check(self, problems: Sequence[Problem]) -> None:
        """Raise the ValueError ``run`` would raise for a bad problem, without computing anything."""
        for problem in problems:
            self._prepare(problem)

    # ------------------------------------------------------------------------------ preparation

    def _prepare(self, problem: Problem) -> _Doc:
        doc = f"doc {problem.doc_id!r}"
        if not isinstance(problem.doc_id, str) or not problem.doc_id:
            raise ValueError(f"doc_id={problem.doc_id!r}: expected a non-empty string")
        for field in ("original_prompt", "alternative_prompt", "injection_text"):
            if not isinstance(getattr(problem, field), str):
                raise ValueError(f"{doc}: {field} must be a string")
        if not isinstance(problem.max_new_tokens, int) or problem.max_new_tokens < 1:
            raise ValueError(f"{doc}: max_new_tokens={problem.max_new_tokens!r}, expected an integer >= 1")
        stops = problem.stop_sequences
        if isinstance(stops, str) or not all(isinstance(s, str) and s for s in stops):
            raise ValueError(f"{doc}: stop_sequences={stops!r}, expected a tuple of non-empty strings")
        original_ids = encode_prompt(self.tokenizer, problem.original_prompt)
        alternative_ids = encode_prompt(self.tokenizer, problem.alternative_prompt)
        if not problem.original_prompt or not original_ids:
            raise ValueError(f"{doc}: original_prompt is empty")
        if not problem.alternative_prompt or not alternative_ids:
            raise ValueError(f"{doc}: alternative_prompt is empty")
        if self.settings.strategy == "replace":
            injected_ids = alternative_ids
        else:
            injected_ids = encode_segment(self.tokenizer, problem.injection_text)
            if not injected_ids:
                raise ValueError(f"{doc}: injection_text {problem.injection_text!r} encodes to no tokens")
        controls = {
            point: control_segment(
                self.settings.noise, injected_ids, self.random_ids, control_seed(self.settings.seed, problem.doc_id, point)
            )
            for point in self.settings.injection_points
        }
        self._check_context_length(doc, original_ids, alternative_ids, injected_ids, problem.max_new_tokens)
        stop = StopRule(self.tokenizer, self.eos_ids, tuple(stops))
        return _Doc(problem, original_ids, alternative_ids, injected_ids, controls, stop)

    def _check_context_length(self, doc: str, original_ids, alternative_ids, injected_ids, max_new_tokens: int):
        # Positions past the model's trained range give garbage (or index errors), not a measurement.
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        run = len(original_ids) + (len(injected_ids) if self.settings.strategy == "append" else 0)
        needed = max(run, len(alternative_ids)) + max_new_tokens
        if isinstance(limit, int) and needed > limit:
            raise ValueError(
                f"{doc}: needs {needed} positions (prompt {len(original_ids)}, alternative prompt "
                f"{len(alternative_ids)}, injected {len(injected_ids)}, max_new_tokens {max_new_tokens}) but the "
                f"model's context is {limit}; shorten the prompt (fewer few-shot examples) or lower max_gen_toks"
            )

    # ------------------------------------------------------------------------------ one batch

    def _run_batch(self, docs: list[_Doc]) -> list[dict]:
        settings = self.settings
        scoring = LoopScoring(settings.track_attention, settings.track_hidden)
        loop = DecodingLoop(self.model, observer=scoring, **scoring.outputs())
        runs = [self._start(loop, doc, *starts) for doc, starts in zip(docs, self._row_starts(docs))]
        regions = self._control_regions(docs)
        by_key = {}
        with attention_weights(self.model, settings.track_attention):
            while loop.running:
                loop.step()
                for run in runs:  # a branch joins the loop at the step after its fork exists
                    for branch in self._reached_points(run, regions):
                        by_key[(id(branch.doc), branch.point, branch.noise)] = (branch, *self._add_branch(loop, scoring, branch))
        return [self._trace(run.doc, run.baseline, run.oracle, by_key) for run in runs]

    def _start(self, loop: DecodingLoop, doc: _Doc, original: tuple, alternative: tuple) -> "_DocRun":
        """Add the doc's baseline and oracle rows to the loop, from their (cache, feed) starts."""
        budget, points = doc.problem.max_new_tokens, frozenset(self.settings.injection_points)
        baseline = loop.add(DecodeRow(*original, budget, doc.stop, capture_after=points))
        oracle = loop.add(DecodeRow(*alternative, budget, doc.stop, capture_after=frozenset({0})))
        return _DocRun(doc, baseline, oracle, list(self.settings.injection_points))

    def _row_starts(self, docs: list[_Doc]) -> list[tuple[tuple, tuple]]:
        """Per doc, the (cache, feed) its baseline and oracle start from. Without ``share_prompts``
        both copy the cache of the prompts' common prefix and feed the rest of their prompt at the
        first step; with it they continue the caches of their whole prompts but the last token
        (``_prompt_caches``), which every later row of the doc continues too."""
        if self.share_prompts:
            return [(_continuing(prompts.original, doc.original_ids), _continuing(prompts.alternative, doc.alternative_ids))
                    for doc, prompts in zip(docs, self._prompt_caches(docs))]
        starts = []
        for doc, prefix in zip(docs, self._shared_prefixes(docs)):
            start = 0 if prefix is None else prefix.length
            starts.append(((prefix, tuple(doc.original_ids[start:])), (prefix, tuple(doc.alternative_ids[start:]))))
        return starts

    def _prompt_caches(self, docs: list[_Doc]) -> list["_PromptCaches"]:
        """Per doc, the caches of its original and alternative prompts without their last token (None
        when that is empty; one cache when the two are equal), prefilled in one forward from their
        common prefix. Every row of the doc continues one of them and none copies it (row_cache.py),
        so a doc's prompts are held once, not once per row. Each row still feeds its prompt's last
        token, whose query predicts its first generated token."""
        prefixes = self._shared_prefixes(docs)
        caches, feeds, slots = [], [], []
        for doc, prefix in zip(docs, prefixes):
            start = 0 if prefix is None else prefix.length
            wanted = [doc.original_ids[:-1]] + ([doc.alternative_ids[:-1]] if doc.alternative_ids[:-1] !=
                                                doc.original_ids[:-1] else [])
            doc_slots = []
            for ids in wanted:
                if len(ids) == start:  # the prompt is the prefix: nothing left to feed
                    doc_slots.append(prefix)
                    continue
                doc_slots.append(len(caches))
                caches.append(prefix)
                feeds.append(ids[start:])
            slots.append(doc_slots)
        extended = extend_caches(self.model, caches, feeds)
        found = [[extended[s] if isinstance(s, int) else s for s in doc_slots] for doc_slots in slots]
        return [_PromptCaches(pair[0], pair[-1]) for pair in found]

    def _shared_prefixes(self, docs: list[_Doc]) -> list[RowCache | None]:
        """Per doc, the cache of the prompt prefix that the original and alternative prompts share
        (None when empty), prefilled once in one batch, before either prompt's last token."""
        lengths = [_common_prefix_length(d.original_ids[:-1], d.alternative_ids[:-1]) for d in docs]
        prefixes = [d.original_ids[:n] for d, n in zip(docs, lengths) if n]
        caches = iter(extend_caches(self.model, [None] * len(prefixes), prefixes))
        return [next(caches) if n else None for n in lengths]

    def _control_regions(self, docs: list[_Doc]) -> dict[tuple[int, int], RowCache]:
        """replace: (id(doc), point) -> the cache of the length-matched control prompt that noise@N
        swaps in, prefilled in one batch before decoding (append: none)."""
        if self.settings.strategy != "replace":
            return {}
        keys = [(id(doc), point) for doc in docs for point in self.settings.injection_points]
        controls = [doc.controls[point] for doc in docs for point in self.settings.injection_points]
        return dict(zip(keys, extend_caches(self.model, [None] * len(controls), controls)))

    def _reached_points(self, run: "_DocRun", regions) -> list[_Branch]:
        """The injection@N and noise@N branches of every point N the baseline has just reached (its
        cache after N tokens was captured in the last step); points it stopped at or before are
        dropped (not injected)."""
        branches = []
        while run.points:
            point = run.points[0]
            fork = run.baseline.captures.get(point)
            if fork is None and not run.baseline.stop_reason:
                break  # not reached yet
            run.points.pop(0)
            if fork is None:  # stopped at or before N tokens
                continue
            doc, alternative = run.doc, run.oracle.captures[0]
            pre_ids = run.baseline.new_ids[:point]
            for noise, segment in ((False, doc.injected_ids), (True, doc.controls[point])):
                # replace: the injection swaps in the oracle's prompt cache, a control its control prompt.
                region = (regions[(id(doc), point)] if noise else alternative) if regions else None
                branches.append(_Branch(doc, point, noise, segment, fork, pre_ids, alternative, region))
        return branches

    # ------------------------------------------------------------------------------ contexts

    def _run_context(self, branch: _Branch) -> tuple[RowCache, list[int], list[int]]:
        """(cache, context ids, segment labels) of the run's context just before its first new token;
        the cache covers a prefix of the context ids and the rest is still to be fed."""
        doc, n_pre = branch.doc, len(branch.pre_ids)
        prompt_length = len(doc.original_ids)
        if self.settings.strategy == "append":
            ids = doc.original_ids + branch.pre_ids + branch.segment
            labels = _prompt_labels(prompt_length, ORIGINAL_PROMPT) + [GENERATED_BEFORE] * n_pre
            return branch.fork, ids, labels + [INJECTED] * len(branch.segment)
        # replace: the new prompt region, then the generated tokens' K/V moved by the length change.
        generated = self.rotary_keys.move(branch.fork.tail(prompt_length), len(branch.segment) - prompt_length)
        # share_prompts: the region is held once (the oracle's capture continues the alternative
        # prompt's cache; a control prompt's cache is continued as it is).
        region = branch.region if branch.region.prefix is not None or not self.share_prompts else \
            RowCache.continuing(branch.region)
        context = region.then(generated)
        ids = branch.segment + branch.pre_ids
        labels = _prompt_labels(len(branch.segment), INJECTED) + [GENERATED_BEFORE] * n_pre
        # The last token is fed again: its query is what predicts the first token after the swap.
        return context.head(context.length - 1), ids, labels

    def _add_branch(self, loop: DecodingLoop, scoring: LoopScoring, branch: _Branch) -> tuple[DecodeResult, dict]:
        """Add the branch's run row and its old and new context rows (teacher-forced along the run,
        scored in the same steps) to the loop; returns the run's result and its series."""
        doc, pre = branch.doc, branch.pre_ids
        cache, ids, labels = self._run_context(branch)
        budget = doc.problem.max_new_tokens - branch.point
        run = DecodeRow(cache, tuple(ids[cache.length :]), budget, doc.stop, prior_ids=tuple(pre))
        # Old and new reuse their prompt's cache only and feed the rest alike (last prompt token, then
        # pre_ids): in 16-bit, pre_ids cached while decoding and pre_ids fed anew differ by rounding,
        # and identical contexts must give identical distributions. The last fed token is not cached
        # before the loop: its query predicts post_ids[0].
        old = DecodeRow(branch.fork.head(len(doc.original_ids) - 1), (doc.original_ids[-1], *pre), budget, doc.stop)
        new = DecodeRow(branch.alternative.head(len(doc.alternative_ids) - 1), (doc.alternative_ids[-1], *pre),
                        budget, doc.stop)
        return scoring.add(loop, run, old, new, labels)

    # ------------------------------------------------------------------------------ traces

    def _precision(self) -> dict:
        """The trace's precision settings (trace_schema.PRECISION_KEYS): the metrics' resolution depends
        on them. Every row of the loop, scoring rows included, runs in the model's dtype."""
        dtype = str(self.model.dtype).removeprefix("torch.")
        return {"dtype": dtype, "score_dtype": dtype}

    def _condition(self, doc: _Doc, prompt: str, ids: list[int], stop_reason: str) -> dict:
        text = truncate_at_stop(decode_generated(self.tokenizer, ids), doc.stop.stop_sequences)
        return condition(prompt, ids, text, stop_reason)

    def _trace(self, doc: _Doc, baseline: DecodeResult, oracle: DecodeResult, by_key: dict) -> dict:
        settings = self.settings
        baseline_entry = self._condition(doc, "original", baseline.new_ids, baseline.stop_reason)
        conditions = {
            "baseline": baseline_entry,
            "oracle": self._condition(doc, "alternative", oracle.new_ids, oracle.stop_reason),
        }
        for point in settings.injection_points:
            for noise in (False, True):
                name = f"{'noise' if noise else 'injection'}@{point}"
                segment = doc.controls[point] if noise else doc.injected_ids
                fields = {"noise_kind": settings.noise if noise else None,
                          "injected_ids": segment, "injected_text": decode_generated(self.tokenizer, segment)}
                found = by_key.get((id(doc), point, noise))
                reason = not_injected_reason(len(baseline.new_ids), baseline.stop_reason, point)
                if (found is None) != (reason is not None):
                    raise RuntimeError(f"doc {doc.problem.doc_id}: the injection branch at N={point} disagrees with "
                                       "not_injected_reason; the decoder's cache captures changed")
                if found is None:
                    conditions[name] = injection_condition(
                        baseline_entry, point, pre_ids=baseline.new_ids[:point], post_ids=[],
                        series=empty_series(settings.track_attention, settings.track_hidden),
                        not_injected_reason=reason, **fields,
                    )
                    continue
                branch, run, series = found
                ids = branch.pre_ids + run.new_ids
                conditions[name] = injection_condition(
                    self._condition(doc, "original", ids, run.stop_reason), point,
                    pre_ids=branch.pre_ids, post_ids=run.new_ids, series=series, **fields,
                )
        problem = doc.problem
        trace_settings = {**settings.as_dict(), "max_new_tokens": problem.max_new_tokens,
                          "stop_sequences": list(problem.stop_sequences), **self._precision()}
        prompts = {
            "original": {"text": problem.original_prompt, "ids": list(doc.original_ids)},
            "alternative": {"text": problem.alternative_prompt, "ids": list(doc.alternative_ids)},
        }
        return build_trace(problem.doc_id, trace_settings, prompts, conditions)


def not_injected_reason(generated: int, stop_reason: str, point: int) -> str | None:
    """None when a run is injected at N: the baseline generated more than N tokens, i.e. N without stopping
    at or before the N-th (and has budget left). Otherwise the reason recorded in the trace; kvinject
    train skips such docs with the same reason."""
    if generated > point:
        return None
    return f"baseline stopped after {generated} tokens ({stop_reason}) {'before' if generated < point else 'at'} N={point}"


def _prompt_labels(length: int, segment: int) -> list[int]:
    """The first prompt position is the attention sink; the rest belong to ``segment``."""
    return [SINK] + [segment] * (length - 1)


def _continuing(prompt: RowCache | None, ids: list[int]) -> tuple[RowCache | None, tuple[int, ...]]:
    """(cache, feed) of a row that continues ``prompt`` (held once, not copied) and feeds the rest of ``ids``."""
    if prompt is None:
        return None, tuple(ids)
    return RowCache.continuing(prompt), tuple(ids[prompt.length :])


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
