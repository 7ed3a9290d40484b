"""The stop rule: it stops a branch at the step lm-eval's HFLM would (its MultiTokenEOSCriteria),
reading only the newest ids."""
import random

import pytest
import torch
from lm_eval.models.utils_hf import stop_sequences_criteria

from kvinject.model_adapters.engine.decoding import _newest
from kvinject.model_adapters.engine.tokens import StopRule
from tests.helpers import TinyCharTokenizer

PROMPT = [5, 6, 7]


class _BatchDecoding(TinyCharTokenizer):
    """What lm-eval's criteria call besides encode: batch_decode over a tensor of rows."""

    def batch_decode(self, rows):
        return [self.decode(row.tolist()) for row in rows]


def _hflm_stop_step(tokenizer, stops, generated) -> int | None:
    """The first k at which lm-eval's criteria stop a batch-1 generation of generated[:k]."""
    criteria = stop_sequences_criteria(tokenizer, list(stops), len(PROMPT), 1)
    for k in range(1, len(generated) + 1):
        if criteria(torch.tensor([PROMPT + generated[:k]]), None).all():
            return k
    return None


def _rule_stop_step(rule, generated) -> int | None:
    for k in range(1, len(generated) + 1):
        if rule.reason(generated[:k], budget_left=10**6) == "stop_sequence":
            return k
    return None


def _random_ids(rng, pool, length):
    return [rng.choice(pool) for _ in range(length)]


@pytest.mark.parametrize("seed", range(20))
def test_stops_where_lm_eval_stops_on_a_character_tokenizer(seed):
    tokenizer = _BatchDecoding(eos_token_id=None)
    rng = random.Random(seed)
    stops = ("ab", "xyz", "</s>", "Q:")
    pool = tokenizer.encode("abQ: xyz", add_special_tokens=False) + [2]   # 2 decodes as "</s>"
    generated = _random_ids(rng, pool, 40)
    rule = StopRule(tokenizer, frozenset(), stops)
    assert _rule_stop_step(rule, generated) == _hflm_stop_step(tokenizer, stops, generated)


def test_a_special_token_named_as_a_stop_sequence_stops_the_branch():
    tokenizer = TinyCharTokenizer(eos_token_id=None)
    rule = StopRule(tokenizer, frozenset(), ("</s>",))
    assert rule.reason([10, 11], 5) is None
    assert rule.reason([10, 11, 2], 5) == "stop_sequence"      # id 2 decodes as "</s>"
    assert StopRule(tokenizer, frozenset({2}), ("</s>",)).reason([10, 2], 5) == "eos"
    assert rule.reason([10, 11], 0) == "max_new_tokens"


def test_the_rule_reads_only_its_lookback():
    tokenizer = TinyCharTokenizer(eos_token_id=None)
    rule = StopRule(tokenizer, frozenset(), ("ab", "xyz"))
    assert rule.lookback == 5                                   # len("xyz") + 2 characters
    ids = tokenizer.encode("ab" + "c" * 10, add_special_tokens=False)
    assert rule.reason(ids, 5) is None                          # "ab" left the window long ago
    assert rule.reason(ids[:4], 5) == "stop_sequence"           # "abcc": within "ab"'s 4 ids
    assert StopRule(tokenizer, frozenset(), ()).lookback == 1


@pytest.mark.parametrize("prior, new, count, expected", [
    ((1, 2, 3), [4, 5], 4, (2, 3, 4, 5)),
    ((1, 2, 3), [4, 5], 2, (4, 5)),
    ((1,), [4], 5, (1, 4)),                                     # fewer ids than asked: all of them
    ((), [4, 5, 6], 2, (5, 6)),
    ((1, 2), [], 1, (2,)),
])
def test_newest_ids_join_the_pre_injection_ids(prior, new, count, expected):
    assert _newest(prior, new, count) == expected


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_stops_where_lm_eval_stops_on_smollm2s_tokenizer(smollm2, seed):
    """A byte-level BPE where stop strings come in other tokenisations (`\\n` `\\n` for `\\n\\n`)
    and where <|endoftext|> is a special token."""
    _, tokenizer = smollm2
    rng = random.Random(seed)
    stops = ("\n\n", "Question:", "<|endoftext|>", "</s>")
    pieces = ["\n", "\n\n", " Question", "Question", ":", " the", " answer", "</", "s", ">", " 12", "."]
    pool = sorted({i for piece in pieces for i in tokenizer.encode(piece, add_special_tokens=False)})
    pool.append(tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    generated = _random_ids(rng, pool, 60)
    rule = StopRule(tokenizer, frozenset(), stops)
    assert _rule_stop_step(rule, generated) == _hflm_stop_step(tokenizer, stops, generated)
