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

from kvinject.model_adapters.engine.decoding import DecodeResult, DecodeRow, StepOutput
from kvinject.model_adapters.engine.divergence import cosine_similarity, entropy, kl_divergence, log_probs
from kvinject.model_adapters.engine.row_cache import PaddedBatch, RowCache
from kvinject.trace_schema import SEGMENTS, empty_series

NO_SEGMENT = -1  # pad slots and contexts whose attention is not reported
GENERATED_AFTER = SEGMENTS.index("generated_after")

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
def score_triples(model, triples: list[ScoringTriple], track_attention: bool, track_hidden: bool) -> list[dict]:
    """The ``series`` dict of the trace schema for every triple, in order (run, old and new contexts
    of all triples in one batch; attention is reported for the run contexts only)."""
    if not triples:
        return []
    count = len(triples)
    contexts = [t.run for t in triples] + [t.old for t in triples] + [t.new for t in triples]
    labels = [t.run_labels for t in triples] + [()] * (2 * count)
    width = max(len(t.targets) for t in triples)
    series = [empty_series(track_attention, track_hidden) for _ in triples]
    chunks = teacher_forced_chunks(
        model, contexts, [len(t.targets) for t in triples] * 3, labels,
        output_attentions=track_attention, output_hidden_states=track_hidden,
    )
    for start, stop, out, slots in chunks:
        _reduce_chunk(out, triples, slots, series, start, stop, width, track_attention, track_hidden)
        del out
    return series


def token_numbers(run, old, new, targets) -> dict[str, torch.Tensor]:
    """The scalar series of the trace for log-distributions ``run``, ``old``, ``new`` [..., vocab] of
    the queries predicting ``targets`` [...]."""
    targets = targets.unsqueeze(-1)
    return {
        "logp_run": run.gather(-1, targets).squeeze(-1),
        "logp_old": old.gather(-1, targets).squeeze(-1),
        "logp_new": new.gather(-1, targets).squeeze(-1),
        "kl_run_new": kl_divergence(run, new),
        "kl_run_old": kl_divergence(run, old),
        "kl_old_new": kl_divergence(old, new),
        "entropy_run": entropy(run),
    }


def _reduce_chunk(out, triples, slots, series, start, stop, width, track_attention, track_hidden) -> None:
    count = len(triples)
    logp = log_probs(out.logits)
    run, old, new = logp[:count], logp[count : 2 * count], logp[2 * count :]
    columns = stop - start
    targets = torch.zeros(count, columns, dtype=torch.long, device=logp.device)
    for row, triple in enumerate(triples):
        first = width - len(triple.targets)  # column of this triple's first query
        for column in range(max(start, first), stop):
            targets[row, column - start] = triple.targets[column - first]
    numbers = token_numbers(run, old, new, targets)
    del logp, run, old, new
    if track_attention:
        one_hot = slots.one_hot(count)  # [count, slots, segments]
        # Head-averaged weights of each run query over all slots, summed within segments.
        mass = torch.stack([torch.bmm(a[:count].float().mean(1), one_hot) for a in out.attentions], dim=2)
    if track_hidden:
        hidden = out.hidden_states[1:]
        cos_new = torch.stack([cosine_similarity(h[:count], h[2 * count :]) for h in hidden], dim=-1)
        cos_old = torch.stack([cosine_similarity(h[:count], h[count : 2 * count]) for h in hidden], dim=-1)
    for row, triple in enumerate(triples):
        first_column = max(start, width - len(triple.targets)) - start
        if first_column >= columns:
            continue
        row_series = series[row]
        for key, values in numbers.items():
            row_series[key].extend(values[row, first_column:].tolist())
        if track_attention:
            per_token = mass[row, first_column:].tolist()  # [tokens][layers][segments]
            for index, segment in enumerate(SEGMENTS):
                row_series["attention"][segment].extend([[layer[index] for layer in token] for token in per_token])
        if track_hidden:
            row_series["hidden_cos_new"].extend(cos_new[row, first_column:].tolist())
            row_series["hidden_cos_old"].extend(cos_old[row, first_column:].tolist())


# ------------------------------------------------------------------------------ scoring in the loop


@dataclasses.dataclass
class _LoopRun:
    run: DecodeResult
    old: DecodeResult
    new: DecodeResult
    labels: torch.Tensor  # SEGMENTS index of every run-context token, then GENERATED_AFTER for every post token
    series: dict


class LoopScoring:
    """Scores branches inside a ``DecodingLoop`` (its observer): a branch's run row decodes greedily
    and its old and new context rows are teacher-forced along it in the same steps, so at every step
    the three rows' last queries predict the same post-injection token. Each step is reduced to the
    trace's per-token numbers at once; nothing of vocabulary size outlives the step."""

    def __init__(self, track_attention: bool, track_hidden: bool):
        self.track_attention, self.track_hidden = track_attention, track_hidden
        self.live: list[_LoopRun] = []

    def outputs(self) -> dict:
        """The model outputs a DecodingLoop must ask for."""
        return {"output_attentions": self.track_attention, "output_hidden_states": self.track_hidden}

    def add(self, loop, run: DecodeRow, old: DecodeRow, new: DecodeRow, run_labels: list[int]) -> tuple[DecodeResult, dict]:
        """Add a branch's three rows to ``loop``; returns the run's result and the series it fills."""
        run_result = loop.add(run, observed=True)
        labels = torch.tensor(run_labels + [GENERATED_AFTER] * run.budget, device=loop.model.device)
        entry = _LoopRun(run_result, loop.add(old, leader=run_result), loop.add(new, leader=run_result), labels,
                         empty_series(self.track_attention, self.track_hidden))
        self.live.append(entry)
        return run_result, entry.series

    @torch.inference_mode()
    def __call__(self, step: StepOutput) -> None:
        position = {id(result): row for row, result in enumerate(step.results)}
        live = [r for r in self.live if id(r.run) in position]
        rows = {name: torch.tensor([position[id(getattr(r, name))] for r in live], device=step.logits.device)
                for name in ("run", "old", "new")}
        targets = torch.tensor([step.tokens[position[id(r.run)]] for r in live], device=step.logits.device)
        run, old, new = (log_probs(step.logits[rows[name]]) for name in ("run", "old", "new"))
        numbers = {key: values.tolist() for key, values in token_numbers(run, old, new, targets).items()}
        del run, old, new
        if self.track_attention:
            masses = self._attention(step, live, rows["run"]).tolist()  # [runs][layers][segments]
        if self.track_hidden:
            hidden = [h[:, -1] for h in step.hidden_states[1:]]
            cosines = {key: torch.stack([cosine_similarity(h[rows["run"]], h[rows[name]]) for h in hidden], -1).tolist()
                       for key, name in (("hidden_cos_new", "new"), ("hidden_cos_old", "old"))}
        for index, entry in enumerate(live):
            for key, values in numbers.items():
                entry.series[key].append(values[index])
            if self.track_attention:
                for segment_index, segment in enumerate(SEGMENTS):
                    entry.series["attention"][segment].append([layer[segment_index] for layer in masses[index]])
            if self.track_hidden:
                for key, values in cosines.items():
                    entry.series[key].append(values[index])
        self.live = [r for r in self.live if not r.run.stop_reason]

    @staticmethod
    def _attention(step: StepOutput, live: list[_LoopRun], run_rows: torch.Tensor) -> torch.Tensor:
        """[runs, layers, segments]: head-averaged weights of each run row's last query, summed
        within the segments of its real slots."""
        one_hot = torch.zeros(len(live), step.mask.shape[1], len(SEGMENTS), device=step.mask.device)
        for index, (entry, row) in enumerate(zip(live, run_rows.tolist())):
            real = step.mask[row].bool()
            labels = entry.labels[: int(real.sum())]
            one_hot[index, real] = torch.nn.functional.one_hot(labels, len(SEGMENTS)).float()
        weights = torch.stack([a[run_rows, :, -1].float().mean(1) for a in step.attentions], dim=1)
        return torch.bmm(weights, one_hot)
