"""The side-by-side comparisons of the benchmark suite, shared by the pytest benchmarks and the
GPU script; each returns table rows (measure.Row) plus what was computed, for the callers' checks.

Every run here decodes to its full budget: EOS is switched off (``no_eos``) so that a budget means
the same number of generated tokens for both contenders whatever the model prefers to say.
"""
from __future__ import annotations

import contextlib
import dataclasses
import tempfile

import torch
from helpers import logit_tolerance
from measure import Row, interleaved_seconds, median, paired_ratio, peak_memory_mib
from naive_reference import naive_analysis
from transformers import Cache, StoppingCriteria, StoppingCriteriaList

from kvinject.model_adapters import trace_log
from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.model_adapters.engine.decoding import extend_caches
from kvinject.model_adapters.engine.row_cache import cache_held_bytes
from kvinject.model_adapters.engine.tokens import encode_prompt
from kvinject.model_adapters.memory import doc_kv_bytes, doc_shape, hidden_layers, kv_bytes_per_position

BATCH_SIZES = (1, 2, 4, 8)


def math_problems(count: int, budget: int) -> list[Problem]:
    """Short MAWPS-like word problems whose alternative changes one number (as the math task does)."""
    problems = []
    for i in range(count):
        question = (f"Question: A baker made {12 + i} trays of {6 + i % 4} muffins each and sold {20 + 3 * i} "
                    f"muffins. How many muffins are left? ")
        alternative = question.replace(f"{12 + i} trays", f"{15 + i} trays")
        problems.append(Problem(f"doc-{i}", question + "Answer:", alternative + "Answer:",
                                f" Correction: {alternative}Answer:", budget))
    return problems


@dataclasses.dataclass
class NoEosTokenizer:
    """The engine's tokenizer protocol over ``tokenizer`` with no EOS id, so rows run to their budget."""

    tokenizer: object
    eos_token_id = None

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __len__(self):
        return len(self.tokenizer)


@contextlib.contextmanager
def no_eos(model, tokenizer):
    """(tokenizer without EOS) with the model's generation_config EOS removed for the duration."""
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        yield NoEosTokenizer(tokenizer)
    finally:
        model.generation_config.eos_token_id = saved


# --------------------------------------------------------------------------------- comparisons

@torch.inference_mode()
def inject_vs_reprefill(model, repeats: int, context: int = 256, appended: int = 64, label: str = "") -> Row:
    """Appending ``appended`` tokens to a cached context of ``context`` tokens (the engine's own
    extend_caches, padded-batch assembly included) vs one forward pass over all of them."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(3, vocab, (context + appended,), generator=generator).tolist()
    cached = extend_caches(model, [None], [ids[:context]])[0]
    all_ids = torch.tensor([ids], device=model.device)
    seconds, outputs = interleaved_seconds({
        "inject": lambda: extend_caches(model, [cached], [ids[context:]])[0],
        "reprefill": lambda: model(input_ids=all_ids, logits_to_keep=1),
    }, repeats)
    assert outputs["inject"].length == context + appended
    return Row(f"inject_vs_reprefill{label} L={context} k={appended}", "inject", "re-prefill",
               paired_ratio(seconds, "inject", "reprefill"), "<= 0.30",
               _medians(seconds))


def doc_analysis_vs_generate(model, tokenizer, problem: Problem, track: bool, repeats: int,
                             label: str = "") -> tuple[list[Row], dict]:
    """One doc's full analysis (every condition, scoring; attention and hidden states if ``track``)
    vs ``model.generate`` of its baseline alone, same budget. Returns the rows (plus the trace's size on
    disk when tracking) and both outputs."""
    settings = InjectionSettings(track_attention=track, track_hidden=track)
    with no_eos(model, tokenizer) as engine_tokenizer:
        engine = InjectionEngine(model, engine_tokenizer, settings)
        prompt = torch.tensor([encode_prompt(tokenizer, problem.original_prompt)], device=model.device)

        def generate():
            with torch.inference_mode():
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                     max_new_tokens=problem.max_new_tokens, pad_token_id=0)
            return out[0, prompt.shape[1]:].tolist()

        seconds, outputs = interleaved_seconds({"analysis": lambda: engine.run([problem])[0], "generate": generate},
                                               repeats)
    tracking = "with" if track else "without"
    rows = [Row(f"doc_analysis_vs_generate{label} budget={problem.max_new_tokens} {tracking} attention/hidden",
              "full analysis", "generate baseline", paired_ratio(seconds, "analysis", "generate"),
              "<= 1.6" if track else "", _medians(seconds))]
    if track:
        kib = trace_kib_on_disk(outputs["analysis"])
        rows.append(Row(f"trace_size{label} budget={problem.max_new_tokens}", "KiB on disk per doc", "1", kib,
                        "<= 200", "as model_adapters/trace_log.TraceLog writes it; the table's ratio is KiB"))
    return rows, outputs


class _RowBudgets(StoppingCriteria):
    """Each row of a left-padded ``generate`` batch stops after its own number of new tokens."""

    def __init__(self, prompt_width: int, budgets: list[int]):
        self.prompt_width, self.budgets = prompt_width, budgets

    def __call__(self, input_ids, scores, **kwargs):
        generated = input_ids.shape[1] - self.prompt_width
        return torch.tensor([generated >= budget for budget in self.budgets], device=input_ids.device)


def reprompted_conditions(trace: dict) -> dict[str, tuple[list[int], int]]:
    """{condition: (full prompt ids, new-token budget)} as a user would re-prompt every condition of
    ``trace`` (append): baseline and oracle their prompts; injection@N and noise@N the original
    prompt + the baseline's first N tokens + the segment, with the budget left after N tokens."""
    original, alternative = trace["prompts"]["original"]["ids"], trace["prompts"]["alternative"]["ids"]
    budget = trace["settings"]["max_new_tokens"]
    conditions = {"baseline": (original, budget), "oracle": (alternative, budget)}
    for name, entry in trace["conditions"].items():
        if "@" in name:
            conditions[name] = (original + entry["pre_ids"] + entry["injected_ids"], budget - entry["injection_point"])
    return conditions


@dataclasses.dataclass
class ForwardWork:
    """What the model was asked to do while a function ran, counted by hooks on the model."""

    calls: int = 0  # forward calls
    positions: int = 0  # batch rows x sequence width of every call, padding included
    peak_cache_bytes: int = 0  # the largest KV cache a call left behind (keys and values, all layers)


def forward_work(model, run) -> ForwardWork:
    """The ForwardWork of ``run()``. Positions are the work a compute-bound device does in the linear
    layers, which dominate at these context lengths; the cache is the running batch's (caches forked
    and held outside the batch are not in it)."""
    work = ForwardWork()

    def before(module, args, kwargs):
        fed = kwargs.get("input_ids")
        fed = kwargs.get("inputs_embeds") if fed is None else fed
        fed = args[0] if fed is None and args else fed
        work.calls += 1
        work.positions += fed.shape[0] * fed.shape[1]

    def after(module, args, kwargs, output):
        caches = [value for value in kwargs.values() if isinstance(value, Cache)]
        caches += [output.past_key_values] if isinstance(getattr(output, "past_key_values", None), Cache) else []
        for cache in caches:
            work.peak_cache_bytes = max(work.peak_cache_bytes, cache_held_bytes(cache))

    handles = [model.register_forward_pre_hook(before, with_kwargs=True),
               model.register_forward_hook(after, with_kwargs=True)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return work


def analysis_vs_batched_reprompt(model, tokenizer, problem: Problem, repeats: int,
                                 label: str = "") -> tuple[list[Row], dict]:
    """One doc's full analysis (scores, attention and hidden tracking on) vs what a user would write
    without kvinject: one ``model.generate`` over the 8 conditions' full prompts at once (left-padded,
    the injection and noise rows re-prompted with the baseline's first N tokens, which are taken from
    the engine and not timed), no scores, same budgets. Also the engine's forward calls per batch
    against the issue's bound, and the same analysis with ``share_prompts`` (time and peak KV cache
    against the prompts copied into every row). Returns the rows and the three outputs ({condition:
    generated ids})."""
    settings = InjectionSettings()
    with no_eos(model, tokenizer) as engine_tokenizer:
        engine = InjectionEngine(model, engine_tokenizer, settings)
        shared_engine = InjectionEngine(model, engine_tokenizer, settings, share_prompts=True)
        trace = engine.run([problem])[0]
        conditions = reprompted_conditions(trace)
        width = max(len(ids) for ids, _ in conditions.values())
        ids = torch.tensor([[0] * (width - len(p)) + p for p, _ in conditions.values()], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in conditions.values()], device=model.device)
        budgets = [b for _, b in conditions.values()]

        def reprompt():
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=max(budgets),
                                     pad_token_id=0, stopping_criteria=StoppingCriteriaList([_RowBudgets(width, budgets)]))
            return {name: out[row, width : width + budget].tolist()
                    for row, (name, (_, budget)) in enumerate(conditions.items())}

        def analysis(analysing=engine):
            trace = analysing.run([problem])[0]
            return {name: c["ids"][len(c.get("pre_ids", [])):] for name, c in trace["conditions"].items()}

        seconds, outputs = interleaved_seconds(
            {"analysis": analysis, "reprompt": reprompt, "shared": lambda: analysis(shared_engine)}, repeats)
        work, reprompt_work = forward_work(model, lambda: engine.run([problem])), forward_work(model, reprompt)
        shared_work = forward_work(model, lambda: shared_engine.run([problem]))
    budget, bound = problem.max_new_tokens, problem.max_new_tokens + max(settings.injection_points)
    rows = [Row(f"batched_reprompt_generate{label} budget={budget}", "full analysis", "batched re-prompting generate",
                paired_ratio(seconds, "analysis", "reprompt"), "<= 1.2", _medians(seconds)),
            # Not a target: where every position costs the same (a compute-bound CPU) this ratio is
            # about the least the time ratio above can be; a memory-bound GPU step costs about the
            # same for 8 rows as for 20, so there the time ratio can fall below it.
            Row(f"positions_fed{label} budget={budget}", "query positions the analysis feeds the model",
                "positions batched re-prompting feeds", work.positions / reprompt_work.positions, "",
                f"{work.positions} vs {reprompt_work.positions} (counted, exact; padding included)"),
            Row(f"forward_calls{label} budget={budget}", "forward calls per batch (prefill, decoding, scoring)",
                "budget + largest point", work.calls / bound, "<= 1.05",
                f"{work.calls} calls (counted, exact); bound {bound}"),
            kv_cache_row(model, tokenizer, problem, settings, work.peak_cache_bytes, reprompt_work.peak_cache_bytes,
                         label, share_prompts=False),
            kv_cache_row(model, tokenizer, problem, settings, shared_work.peak_cache_bytes,
                         reprompt_work.peak_cache_bytes, label, share_prompts=True),
            Row(f"shared_prompts_kv{label} budget={budget}", "peak KV bytes, share_prompts=true",
                "peak KV bytes, prompts copied", shared_work.peak_cache_bytes / work.peak_cache_bytes, "",
                f"{shared_work.peak_cache_bytes / 2**20:.1f} vs {work.peak_cache_bytes / 2**20:.1f} MiB (counted)"),
            Row(f"shared_prompts_time{label} budget={budget}", "full analysis, share_prompts=true",
                "full analysis, prompts copied", paired_ratio(seconds, "shared", "analysis"), "", _medians(seconds))]
    return rows, outputs


def kv_cache_row(model, tokenizer, problem: Problem, settings: InjectionSettings, peak_bytes: int,
                 reprompt_bytes: int, label: str, share_prompts: bool) -> Row:
    """The decoding batch's peak KV cache for one doc (measured) against memory.doc_kv_bytes, the
    estimate batch_size=auto sizes batches with (an upper bound: it also counts the forked caches
    held outside the batch); batched re-prompting's cache beside it."""
    shape = doc_shape(tokenizer, problem, settings.strategy, len(settings.injection_points))
    position = kv_bytes_per_position(model.config, model.dtype.itemsize)
    estimate = doc_kv_bytes(shape, position, position, hidden_layers(model.config), share_prompts)
    name = "peak_kv_cache_shared_prompts" if share_prompts else "peak_kv_cache"
    return Row(f"{name}{label} one doc", "decoding batch's peak KV bytes (measured)",
               "batch_size=auto's estimate per doc", peak_bytes / estimate, "<= 1",
               f"{peak_bytes / 2**20:.1f} MiB measured vs {estimate / 2**20:.1f} MiB estimated; "
               f"batched re-prompting {reprompt_bytes / 2**20:.1f} MiB")


def trace_kib_on_disk(trace: dict) -> float:
    """Size of one trace in a trace file written by the adapter's own TraceLog."""
    with tempfile.TemporaryDirectory() as folder:
        log = trace_log.TraceLog(folder)
        log.append("benchmark", trace)
        log.flush()
        return log.path.stat().st_size / 1024


def naive_vs_engine(model, tokenizer, problem: Problem, repeats: int, label: str = "",
                    points: tuple[int, ...] = (5, 10, 15)) -> tuple[Row, dict]:
    """The naive reference (naive_reference.py) vs the engine on one doc, full tracking."""
    settings = InjectionSettings(injection_points=points)
    with no_eos(model, tokenizer) as engine_tokenizer:
        engine = InjectionEngine(model, engine_tokenizer, settings)
        seconds, outputs = interleaved_seconds({
            "naive": lambda: naive_analysis(model, engine_tokenizer, problem, settings),
            "engine": lambda: engine.run([problem])[0],
        }, repeats, warmup=0)
    row = Row(f"naive_reference{label} budget={problem.max_new_tokens} points={','.join(map(str, points))}", "naive", "engine",
              paired_ratio(seconds, "naive", "engine"), ">= 10", _medians(seconds))
    return row, outputs


def batch_scaling(model, tokenizer, problems: list[Problem], repeats: int, label: str = "",
                  sizes=BATCH_SIZES, target: float | None = None) -> tuple[list[Row], dict[int, float]]:
    """Docs per second of the engine at each batch size over the same docs, relative to batch 1,
    then the peak memory (weights included) of one batch at each size. Returns the rows and the
    median docs per second at each size."""
    with no_eos(model, tokenizer) as engine_tokenizer:
        engines = {size: InjectionEngine(model, engine_tokenizer, InjectionSettings(), batch_size=size) for size in sizes}
        seconds, outputs = interleaved_seconds(
            {f"batch {size}": lambda e=engines[size]: e.run(problems) for size in sizes}, repeats, warmup=0)
        memory = {size: peak_memory_mib(lambda e=engines[size]: e.run(problems[:size]), str(model.device))
                  for size in sizes}
    reference = outputs[f"batch {sizes[0]}"]
    for size in sizes[1:]:  # batching must not change what is computed, beyond ties the dtype cannot order
        for expected, found in zip(reference, outputs[f"batch {size}"]):
            assert_same_ids_up_to_a_tie(model, expected, found, "injection@5")
    docs = len(problems)
    rates = {size: docs / median(seconds[f"batch {size}"]) for size in sizes}
    rows = []
    for size in sizes[1:]:
        rows.append(Row(f"batch_scaling{label} batch {size}", f"docs/s at batch {size}", f"docs/s at batch {sizes[0]}",
                        paired_ratio(seconds, f"batch {sizes[0]}", f"batch {size}"),
                        f">= {target}" if target and size == max(sizes) else "",
                        f"{rates[size]:.2f} vs {rates[sizes[0]]:.2f} docs/s over {docs} docs"))
    rows.append(Row(f"peak_memory{label} batch {max(sizes)}", f"peak MiB at batch {max(sizes)}",
                    f"peak MiB at batch {sizes[0]}", memory[max(sizes)] / max(memory[sizes[0]], 1e-9), "",
                    "peak " + ", ".join(f"batch {s}: {m:.0f} MiB" for s, m in memory.items())))
    return rows, rates


@torch.inference_mode()
def assert_same_ids_up_to_a_tie(model, expected: dict, found: dict, name: str) -> None:
    """The two traces' ``name`` runs generate the same ids, or first differ where the model's two
    candidates are tied within the precision's logit tolerance (helpers.LOGIT_TOLERANCE): in 16-bit,
    batches of other shapes round differently and may order a tie the other way, after which the runs
    legitimately go apart."""
    run, other = expected["conditions"][name], found["conditions"][name]
    ids, other_ids = run["pre_ids"] + run["post_ids"], other["pre_ids"] + other["post_ids"]
    step = next((i for i, (a, b) in enumerate(zip(ids, other_ids)) if a != b), None)
    if step is None:
        assert len(ids) == len(other_ids), f"{expected['doc_id']}: {name} stopped at another length"
        return
    prompt, point = expected["prompts"]["original"]["ids"], run["injection_point"]
    context = prompt + ids[:step] if step < point else prompt + run["pre_ids"] + run["injected_ids"] + ids[point:step]
    logits = model(input_ids=torch.tensor([context], device=model.device), logits_to_keep=1).logits[0, -1].float()
    gap = (logits[ids[step]] - logits[other_ids[step]]).abs().item()
    tolerance = logit_tolerance(model.dtype, logits.abs().max().item())
    assert gap <= tolerance, (f"{expected['doc_id']}: {name} ids differ at generated token {step} "
                              f"({ids[step]} vs {other_ids[step]}), whose logits differ by {gap:.3g} > {tolerance:.3g}")


@torch.inference_mode()
def grouped_vs_family_eager(repeats: int, rows: int = 24, slots: int = 600, label: str = "") -> tuple[Row, dict]:
    """One decoding step's attention in one layer of Gemma-3-270M's shape (4 query heads sharing 1 KV
    head of 256 dims, one query per row, ``rows`` rows of ``slots`` cached slots): the engine's grouped
    eager attention vs the family's own eager function (``repeat_kv`` then batched matmuls)."""
    from transformers.models.gemma3 import modeling_gemma3

    from kvinject.model_adapters.engine.attention import grouped_eager_attention

    # A layer of the Gemma 3 modeling file: its first call checks the grouped form against that file's
    # eager function (the warm-up), the timed calls run the grouped form.
    layer = type("Gemma3Attention", (torch.nn.Module,), {"__module__": modeling_gemma3.__name__})()
    layer.num_key_value_groups = 4
    layer.eval()
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(rows, 4, 1, 256, generator=generator)
    key, value = (torch.randn(rows, 1, slots, 256, generator=generator) for _ in range(2))
    mask = torch.zeros(rows, 1, 1, slots)
    seconds, outputs = interleaved_seconds({
        "grouped": lambda: grouped_eager_attention(layer, query, key, value, mask, scaling=256**-0.5),
        "family": lambda: modeling_gemma3.eager_attention_forward(layer, query, key, value, mask, scaling=256**-0.5),
    }, repeats)
    return Row(f"grouped_vs_family_eager{label} rows={rows} slots={slots}", "grouped eager", "family eager",
               paired_ratio(seconds, "grouped", "family"), "<= 0.50", _medians(seconds)), outputs


def _medians(seconds: dict[str, list[float]]) -> str:
    return ", ".join(f"{name} {median(values) * 1000:.0f} ms" for name, values in seconds.items()) + \
        f" (median of {len(next(iter(seconds.values())))})"
