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


def test_a_padded_batch_holds_one_padded_layer_beside_its_cache(monkeypatch, tiny_model_builder):
    """DynamicCache copies what it is given: the padded layers are made one at a time, so assembling
    a batch never holds a second copy of the whole cache."""
    import gc
    import weakref

    from transformers.cache_utils import DynamicLayer

    from kvinject.model_adapters.engine.decoding import extend_caches
    from kvinject.model_adapters.engine.row_cache import PaddedBatch

    model = tiny_model_builder("llama")
    caches = extend_caches(model, [None, None], [[5, 6, 7, 8], [9, 10]])
    given, alive_at_update = [], []
    real_update = DynamicLayer.update

    def update(layer, keys, values, *args, **kwargs):
        gc.collect()
        alive_at_update.append(sum(ref() is not None for ref in given))  # earlier padded layers still alive
        given.append(weakref.ref(keys))
        return real_update(layer, keys, values, *args, **kwargs)

    monkeypatch.setattr(DynamicLayer, "update", update)
    batch = PaddedBatch(model, caches)
    assert alive_at_update == [0] * model.config.num_hidden_layers
    assert batch.cache.layers[0].keys.shape[2] == 4
