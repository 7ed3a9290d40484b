"""Batching and forking never change what is measured."""
import pytest
import torch

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.model_adapters.engine.decoding import DecodeRow, greedy_decode
from kvinject.model_adapters.engine.tokens import StopRule

PROBLEMS = [
    Problem("a", "Q: 1+1?", "Q: 4+4, or 5?", "Now: 4+4, or 5", 9, ("}",)),
    Problem("b", "Question: Ann has 12 coins and loses 5. How many?", "Question: Ann has 3 coins.", "3 coins", 9),
    Problem("c", "Hi. Q: 8*2=", "Hi. Q: 8*3=", "8*3", 9, (";", "]")),
]


@pytest.mark.parametrize("family,strategy", [("qwen2", "append"), ("gpt2", "append"), ("gemma2", "append"),
                                             ("llama", "replace"), ("gemma3_text", "replace")])
def test_a_batch_gives_the_traces_of_one_doc_at_a_time(family, strategy, tiny_model_builder, tiny_tokenizer_class,
                                                       assert_same_trace):
    model = tiny_model_builder(family)
    tokenizer = tiny_tokenizer_class(eos_token_id=2)
    settings = InjectionSettings(injection_points=(0, 2, 5), strategy=strategy, noise="shuffle")
    batched = InjectionEngine(model, tokenizer, settings, batch_size=3).run(PROBLEMS)
    alone = [InjectionEngine(model, tokenizer, settings, batch_size=1).run([p])[0] for p in PROBLEMS]
    lengths = {len(t["prompts"]["original"]["ids"]) for t in batched}
    assert len(lengths) == 3  # the batch really is ragged
    assert_same_trace(batched, alone)


def test_branches_do_not_change_the_shared_prefix(tiny_model_builder, tiny_tokenizer):
    model = tiny_model_builder("mistral")
    without = InjectionEngine(model, tiny_tokenizer, InjectionSettings(injection_points=(2,)), batch_size=3).run(PROBLEMS)
    with_branches = InjectionEngine(model, tiny_tokenizer, InjectionSettings(injection_points=(0, 1, 4)), batch_size=3).run(PROBLEMS)
    for plain, branched in zip(without, with_branches):
        assert plain["conditions"]["baseline"] == branched["conditions"]["baseline"]
        assert plain["conditions"]["oracle"] == branched["conditions"]["oracle"]
        assert set(branched["conditions"]) == {"baseline", "oracle", "injection@0", "noise@0", "injection@1",
                                                "noise@1", "injection@4", "noise@4"}

    # The forked cache itself is untouched by decoding a branch from it.
    prompt = tiny_tokenizer.encode("Q: 1+1?")
    stop = StopRule(tiny_tokenizer, frozenset(), ())
    fork = greedy_decode(model, [DecodeRow(None, tuple(prompt), 5, stop, capture_after=frozenset({2}))])[0].captures[2]
    before = [(k.clone(), v.clone()) for k, v in fork.layers]
    greedy_decode(model, [DecodeRow(fork, (40, 41, 42), 4, stop), DecodeRow(fork, (43,), 6, stop)])
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(fork.layers, before))


def test_a_padded_batch_keeps_the_padded_layers_it_builds(monkeypatch, tiny_model_builder):
    """Each padded layer is built once and kept as the cache's own tensors (no second copy of the
    batch's cache while it is assembled)."""
    from kvinject.model_adapters.engine import row_cache
    from kvinject.model_adapters.engine.decoding import extend_caches

    model = tiny_model_builder("llama")
    caches = extend_caches(model, [None, None], [[5, 6, 7, 8], [9, 10]])
    built, real_padded_layer = [], row_cache._padded_layer
    monkeypatch.setattr(row_cache, "_padded_layer", lambda *a: built.append(real_padded_layer(*a)) or built[-1])
    batch = row_cache.PaddedBatch(model, caches)
    assert len(built) == model.config.num_hidden_layers
    assert all(layer.keys is keys and layer.values is values for layer, (keys, values) in zip(batch.cache.layers, built))
    assert batch.cache.layers[0].keys.shape[2] == 4


def test_rows_continuing_one_prefix_hold_it_once(tiny_model_builder):
    """Rows that continue a prefix hold only their own tokens; the batch holds each distinct prefix
    once (in its pool), gives every row its whole context, and forgets a prefix no row continues."""
    from kvinject.model_adapters.engine.decoding import extend_caches
    from kvinject.model_adapters.engine.row_cache import PaddedBatch, RowCache, cache_held_bytes
    from kvinject.model_adapters.memory import kv_bytes_per_position

    model = tiny_model_builder("llama")
    prompt, other = extend_caches(model, [None, None], [list(range(5, 35)), list(range(40, 50))])
    rows = [RowCache.continuing(prompt), prompt.then(extend_caches(model, [prompt], [[7]])[0].tail(30)),
            *extend_caches(model, [RowCache.continuing(prompt)] * 3 + [RowCache.continuing(other)], [[7], [8], [9], [3]])]
    assert rows[1].prefix is None and all(r.prefix is prompt for r in rows[2:5]) and rows[5].prefix is other
    batch = PaddedBatch(model, rows)
    # Own slots: 31 (the row that copied the prompt) for 6 rows; the pool: 30 slots for 3 entries (0: none).
    assert batch.prefix_slots == 30 and batch.mask.shape[1] == 30 + 31
    position = kv_bytes_per_position(model.config, 4)
    assert cache_held_bytes(batch.cache) == position * (6 * 31 + 3 * 30)  # not 6 * 61
    # Every row's context is its whole sequence: the same next-token logits as the materialised rows.
    fed = batch.feed_tokens([[11]] * 6)
    shared = model(**fed).logits[:, -1]
    plain = PaddedBatch(model, [r.materialised() if r.length else None for r in rows])
    assert plain.prefix_slots == 0
    assert torch.allclose(shared, model(**plain.feed_tokens([[11]] * 6)).logits[:, -1], atol=1e-5)
    assert batch.row_cache(2).prefix is prompt and batch.row_cache(2).own_length == 2
    batch.keep_rows([0, 5])
    assert batch.prefixes == [None, prompt, other]
    batch.keep_rows([1])
    assert batch.prefixes == [None, other] and batch.prefix_slots == 10 and batch.mask.shape[1] == 10 + 32
    assert batch.row_cache(0).prefix is other
