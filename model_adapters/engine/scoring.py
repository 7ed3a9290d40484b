"""Counterfactual (teacher-forced) scoring of a branch's post-injection tokens.

For each branch the same tokens are forced through three contexts, each given as a cache to reuse
plus the ids still to feed, whose last T ids are the queries predicting post_ids[0..T-1]:
run (the branch's own context), old (original prompt + pre_ids) and new (alternative prompt +
pre_ids); see docs/architecture.md section 3. All contexts of all branches go through the model as
one left-padded batch, the queries in column chunks so that no [T, vocab] tensor outlives its chunk:
each chunk is reduced to per-token numbers at once.
"""
from __future__ import annotations

import contextlib
import dataclasses

import torch

from kvinject.model_adapters.engine.divergence import cosine_similarity, entropy, kl_divergence, log_probs
from kvinject.model_adapters.engine.row_cache import PaddedBatch, RowCache
from kvinject.trace_schema import SEGMENTS, empty_series

NO_SEGMENT = -1  # pad slots and contexts whose attention is not reported

# Largest logits tensor (elements) one chunk may create; the reductions need a few of that size.
LOGIT_ELEMENTS_PER_CHUNK = 2**25


@dataclasses.dataclass(frozen=True)
class ScoringContext:
    cache: RowCache | None  # K/V of the context's first tokens, reused
    ids: tuple[int, ...]  # the rest of the context; its last len(targets) ids are the queries


@dataclasses.dataclass(frozen=True)
class ScoringTriple:
    run: ScoringContext
    old: ScoringContext
    new: ScoringContext
    targets: tuple[int, ...]  # post_ids: query t predicts targets[t]
    run_labels: tuple[int, ...]  # SEGMENTS index of every run-context token (cached ones first)


SCORE_DTYPE = torch.float32  # see float32_weights


@contextlib.contextmanager
def float32_weights(model):
    """Score in float32 whatever the model's dtype: the parameters are cast up for the scoring pass
    and back after it (bf16/fp16 -> fp32 -> bf16/fp16 is exact, so decoding is unchanged).

    Why: the measures are differences of KL divergences between nearly equal distributions. In
    16-bit the same context scored in two batch rows gives logits that differ by rounding (SmolLM2
    in bfloat16: |KL(run||old) - KL(run||new)| up to 0.29 nats for identical contexts), which the
    adapted rule would read as adaptation; in float32 the same check gives ~1e-5 (metrics/README.md,
    "Precision"). Cost while scoring: the weights take twice their 16-bit memory (a 7B model 28 GB
    instead of 14 GB) plus the scoring caches in float32, and float32 matrix products run at a
    fraction of 16-bit throughput on GPUs. Quantised (4-bit) weights are left as they are."""
    params = [p for p in model.parameters() if p.dtype in (torch.bfloat16, torch.float16)]
    if not params or not all(p.is_floating_point() for p in model.parameters()):  # 4-bit weights are uint8
        yield
        return
    originals = [p.dtype for p in params]
    attention = model.config._attn_implementation
    try:  # a cast that runs out of memory half-way is undone too
        for p in params:
            p.data = p.data.to(SCORE_DTYPE)
        if attention == "flash_attention_2":  # no float32 kernel
            model.set_attn_implementation("sdpa")
        yield
    finally:
        for p, dtype in zip(params, originals):
            p.data = p.data.to(dtype)
        if attention == "flash_attention_2":
            model.set_attn_implementation(attention)


@contextlib.contextmanager
def eager_attention(model, needed: bool):
    """Attention weights exist only in eager attention; switch to it for one pass and back."""
    previous = model.config._attn_implementation
    if not needed or previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


class _SlotLabels:
    """Segment label of every slot of a PaddedBatch, right-aligned like its feeds."""

    def __init__(self, batch: PaddedBatch, labels: list[tuple[int, ...]], cached: list[int]):
        self.pending = [list(row[length:]) for row, length in zip(labels, cached)]  # labels of ids not fed yet
        self.labels = torch.full_like(batch.mask, NO_SEGMENT)
        for row, (row_labels, length) in enumerate(zip(labels, cached)):
            if length and row_labels:
                self.labels[row, self.labels.shape[1] - length :] = torch.tensor(row_labels[:length])

    def fed(self, counts: list[int]) -> None:
        """The next ``counts[row]`` ids of every row were just fed (right-aligned, as PaddedBatch does)."""
        width = max(counts)
        block = torch.full((len(counts), width), NO_SEGMENT, dtype=self.labels.dtype, device=self.labels.device)
        for row, count in enumerate(counts):
            if count and self.pending[row]:
                block[row, width - count :] = torch.tensor(self.pending[row][:count])
            self.pending[row] = self.pending[row][count:]
        self.labels = torch.cat([self.labels, block], dim=1)

    def one_hot(self, rows: int) -> torch.Tensor:
        """[rows, slots, len(SEGMENTS)] for the first ``rows`` rows; unlabelled slots are all zero."""
        labels = self.labels[:rows]
        one_hot = torch.nn.functional.one_hot(labels.clamp_min(0), len(SEGMENTS)).float()
        return one_hot * (labels >= 0).unsqueeze(-1)


def teacher_forced_chunks(model, contexts: list[ScoringContext], n_queries: list[int],
                          labels: list[tuple[int, ...]] | None = None, **outputs):
    """Force every context through the model as one batch and yield ``(start, stop, output, slots)``
    per chunk of query columns: the last ``n_queries[row]`` ids of each context are its queries,
    left-padded into ``max(n_queries)`` columns, so column j is query ``j - (width - n)`` of a row
    with n queries. ``slots`` labels the batch's slots with ``labels`` (segment per context token,
    cached ones first); ``outputs`` go to the model (output_attentions, output_hidden_states).
    The caller reduces each output before asking for the next chunk."""
    if any(n < 1 or len(c.ids) < n for c, n in zip(contexts, n_queries)):
        raise ValueError("every scored context needs at least one query and enough ids to feed")
    batch = PaddedBatch(model, [c.cache for c in contexts])
    cached = [0 if c.cache is None else c.cache.length for c in contexts]
    slots = _SlotLabels(batch, labels or [()] * len(contexts), cached)

    # Everything before the queries: one forward, only the cache is kept.
    primes = [list(c.ids[: len(c.ids) - n]) for c, n in zip(contexts, n_queries)]
    if any(primes):
        model(**batch.feed_tokens(primes), logits_to_keep=1)
        slots.fed([len(p) for p in primes])

    width = max(n_queries)
    vocab = model.get_output_embeddings().weight.shape[0]
    chunk = max(1, LOGIT_ELEMENTS_PER_CHUNK // (len(contexts) * vocab))
    for start in range(0, width, chunk):
        stop = min(start + chunk, width)
        queries = [list(c.ids[len(c.ids) - n :][max(0, start - width + n) : max(0, stop - width + n)])
                   for c, n in zip(contexts, n_queries)]
        inputs = batch.feed_tokens(queries)
        slots.fed([len(q) for q in queries])
        # Only the query chunks need attention weights: the prime pass above keeps the fast kernel
        # (eager attention over every context position was most of a tiny model's scoring time).
        with eager_attention(model, outputs.get("output_attentions", False)):
            out = model(**inputs, **outputs)
        yield start, stop, out, slots


@torch.inference_mode()
def score_triples(model, triples: list[ScoringTriple], track_attention: bool, track_hidden: bool,
                  float32: bool = True) -> list[dict]:
    """The ``series`` dict of the trace schema for every triple, in order (run, old and new contexts
    of all triples in one batch; attention is reported for the run contexts only); ``float32``:
    a 16-bit model scores in float32 (float32_weights)."""
    if not triples:
        return []
    count = len(triples)
    contexts = [t.run for t in triples] + [t.old for t in triples] + [t.new for t in triples]
    labels = [t.run_labels for t in triples] + [()] * (2 * count)
    width = max(len(t.targets) for t in triples)
    series = [empty_series(track_attention, track_hidden) for _ in triples]
    with float32_weights(model) if float32 else contextlib.nullcontext():
        contexts = [c if c.cache is None else dataclasses.replace(c, cache=c.cache.to(model.dtype)) for c in contexts]
        chunks = teacher_forced_chunks(
            model, contexts, [len(t.targets) for t in triples] * 3, labels,
            output_attentions=track_attention, output_hidden_states=track_hidden,
        )
        for start, stop, out, slots in chunks:
            _reduce_chunk(out, triples, slots, series, start, stop, width, track_attention, track_hidden)
            del out
    return series


def _reduce_chunk(out, triples, slots, series, start, stop, width, track_attention, track_hidden) -> None:
    count = len(triples)
    logp = log_probs(out.logits)
    run, old, new = logp[:count], logp[count : 2 * count], logp[2 * count :]
    columns = stop - start
    # Built on the host and copied once per chunk (not one element at a time); 0 left of a row's queries.
    rows = []
    for triple in triples:
        first = width - len(triple.targets)  # column of this triple's first query
        scored_from = min(max(start, first), stop)
        rows.append([0] * (scored_from - start) + list(triple.targets[scored_from - first : stop - first]))
    targets = torch.tensor(rows, dtype=torch.long).to(logp.device).unsqueeze(-1)
    numbers = {
        "logp_run": run.gather(-1, targets).squeeze(-1),
        "logp_old": old.gather(-1, targets).squeeze(-1),
        "logp_new": new.gather(-1, targets).squeeze(-1),
        "kl_run_new": kl_divergence(run, new),
        "kl_run_old": kl_divergence(run, old),
        "kl_old_new": kl_divergence(old, new),
        "entropy_run": entropy(run),
    }
    del logp, run, old, new
    numbers = {key: values.tolist() for key, values in numbers.items()}  # one device-to-host copy per series
    if track_attention:
        one_hot = slots.one_hot(count)  # [count, slots, segments]
        # Head-averaged weights of each run query over all slots, summed within segments.
        mass = torch.stack([torch.bmm(a[:count].float().mean(1), one_hot) for a in out.attentions], dim=2).tolist()
    if track_hidden:
        hidden = out.hidden_states[1:]
        cos_new = torch.stack([cosine_similarity(h[:count], h[2 * count :]) for h in hidden], dim=-1).tolist()
        cos_old = torch.stack([cosine_similarity(h[:count], h[count : 2 * count]) for h in hidden], dim=-1).tolist()
    for row, triple in enumerate(triples):
        first_column = max(start, width - len(triple.targets)) - start
        if first_column >= columns:
            continue
        row_series = series[row]
        for key, values in numbers.items():
            row_series[key].extend(values[row][first_column:])
        if track_attention:
            per_token = mass[row][first_column:]  # [tokens][layers][segments]
            for index, segment in enumerate(SEGMENTS):
                row_series["attention"][segment].extend([[layer[index] for layer in token] for token in per_token])
        if track_hidden:
            row_series["hidden_cos_new"].extend(cos_new[row][first_column:])
            row_series["hidden_cos_old"].extend(cos_old[row][first_column:])
