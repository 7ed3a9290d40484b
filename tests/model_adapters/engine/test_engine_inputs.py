"""Inputs, stops, early-stopping baselines, noise controls and the trace schema."""
import copy
import json
import re

import pytest

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.model_adapters.engine.noise import control_seed
from kvinject.trace_schema import SCHEMA_VERSION, validate_trace

PROBLEM = Problem("doc-7", "Q: 5 cats and 2 dogs?", "Q: 5 cats and 4 dogs?", "Now 4 dogs.", 8)


@pytest.fixture
def model(tiny_model_builder):
    return tiny_model_builder("llama")  # its greedy continuations vary (stop strings are found in them)


def run(model, tokenizer, problems=(PROBLEM,), **settings):
    engine = InjectionEngine(model, tokenizer, InjectionSettings(**{"injection_points": (1, 3), **settings}))
    traces = engine.run(list(problems))
    for trace in traces:
        validate_trace(trace)
        json.loads(json.dumps(trace, allow_nan=False))  # plain JSON: python ints, finite floats
    return traces


@pytest.mark.parametrize("field,value,message", [
    ("original_prompt", "", "doc 'doc-7': original_prompt is empty"),
    ("alternative_prompt", "", "doc 'doc-7': alternative_prompt is empty"),
    ("max_new_tokens", 0, "doc 'doc-7': max_new_tokens=0"),
    ("injection_text", "", "doc 'doc-7': injection_text '' encodes to no tokens"),
    ("stop_sequences", ("",), "doc 'doc-7': stop_sequences"),
    ("doc_id", "", "doc_id=''"),
])
def test_bad_problems_are_refused_before_any_compute(field, value, message, model, tiny_tokenizer):
    problem = Problem(**{**PROBLEM.__dict__, field: value})
    engine = InjectionEngine(model, tiny_tokenizer, InjectionSettings())
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        engine.run([PROBLEM, problem])


@pytest.mark.parametrize("settings,message", [
    ({"injection_points": (5, -1)}, "injection_points"),
    ({"injection_points": (5, 5)}, "injection_points"),
    ({"strategy": "insert"}, "strategy='insert'"),
    ({"noise": "gaussian"}, "noise='gaussian'"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        InjectionSettings(**settings)


def test_bad_batch_size_is_refused(model, tiny_tokenizer):
    with pytest.raises(ValueError, match="batch_size=0"):
        InjectionEngine(model, tiny_tokenizer, InjectionSettings(), batch_size=0)


def test_a_baseline_that_stops_early_is_recorded_not_injected(model, tiny_tokenizer, tiny_tokenizer_class):
    (free,) = run(model, tiny_tokenizer)
    baseline_ids = free["conditions"]["baseline"]["ids"]
    eos = baseline_ids[1]  # make the baseline's second token its end of sequence
    assert eos not in baseline_ids[:1]
    (trace,) = run(model, tiny_tokenizer_class(eos_token_id=eos), injection_points=(1, 2, 5))
    conditions = trace["conditions"]
    assert conditions["baseline"]["ids"] == baseline_ids[:2]
    assert conditions["baseline"]["stop_reason"] == "eos"
    assert conditions["injection@1"]["injected"] and conditions["noise@1"]["injected"]
    for point, word in ((2, "at"), (5, "before")):
        for kind in ("injection", "noise"):
            entry = conditions[f"{kind}@{point}"]
            assert entry["injected"] is False
            assert entry["not_injected_reason"] == f"baseline stopped after 2 tokens (eos) {word} N={point}"
            assert entry["post_ids"] == [] and entry["series"]["kl_run_new"] == []
            assert entry["ids"] == baseline_ids[:2]


def test_replace_runs_when_no_baseline_reaches_an_injection_point(model, tiny_tokenizer, tiny_tokenizer_class):
    (free,) = run(model, tiny_tokenizer)
    eos = free["conditions"]["baseline"]["ids"][0]  # no branch, hence no control prompt to prefill
    (trace,) = run(model, tiny_tokenizer_class(eos_token_id=eos), strategy="replace")
    assert not any(trace["conditions"][f"{kind}@{n}"]["injected"] for kind in ("injection", "noise") for n in (1, 3))


def test_branches_stop_at_their_own_stop_sequence(model, tiny_tokenizer):
    (free,) = run(model, tiny_tokenizer)
    baseline_ids = free["conditions"]["baseline"]["ids"]
    decode = tiny_tokenizer.decode
    # A two-token stop string first completed by the baseline's token `end`.
    end = next(k for k in range(3, 8) if decode(baseline_ids[k - 1 : k + 1]) not in decode(baseline_ids[:k]))
    stop = decode(baseline_ids[end - 1 : end + 1])
    (trace,) = run(model, tiny_tokenizer, problems=[Problem(**{**PROBLEM.__dict__, "stop_sequences": ("@@", stop)})])
    baseline = trace["conditions"]["baseline"]
    assert baseline["ids"] == baseline_ids[: end + 1] and baseline["stop_reason"] == "stop_sequence"
    assert baseline["text"] == decode(baseline_ids[: end - 1])
    for name, entry in trace["conditions"].items():
        text = tiny_tokenizer.decode(entry["ids"], skip_special_tokens=True)
        assert stop not in entry["text"]
        if entry["stop_reason"] == "stop_sequence":
            assert stop in text and stop not in tiny_tokenizer.decode(entry["ids"][:-1]), name
        else:
            assert stop not in text and len(entry["ids"]) == 8, name


def test_noise_controls_are_seeded_and_length_matched(model, tiny_tokenizer):
    second = Problem(**{**PROBLEM.__dict__, "doc_id": "doc-8"})
    random_a, random_b = run(model, tiny_tokenizer, problems=[PROBLEM, second])
    (again,) = run(model, tiny_tokenizer)
    (reseeded,) = run(model, tiny_tokenizer, seed=99)
    (shuffled,) = run(model, tiny_tokenizer, noise="shuffle")
    injected = random_a["conditions"]["injection@1"]["injected_ids"]
    controls = [random_a["conditions"][f"noise@{n}"]["injected_ids"] for n in (1, 3)]
    assert all(len(c) == len(injected) for c in controls)
    assert not set(tiny_tokenizer.all_special_ids) & set(controls[0] + controls[1])
    assert controls[0] != controls[1]  # seeded per injection point
    assert random_b["conditions"]["noise@1"]["injected_ids"] != controls[0]  # and per doc
    assert again["conditions"]["noise@1"]["injected_ids"] == controls[0]
    assert reseeded["conditions"]["noise@1"]["injected_ids"] != controls[0]
    shuffle = shuffled["conditions"]["noise@3"]
    assert sorted(shuffle["injected_ids"]) == sorted(injected) and shuffle["injected_ids"] != injected
    assert shuffle["noise_kind"] == "shuffle" and "noise_kind" not in shuffled["conditions"]["injection@3"]
    # A stable hash, not Python's salted hash(): fixed across processes.
    assert control_seed(1234, "doc-7", 5) == 3708852545424687510


def test_trace_layout(model, tiny_tokenizer):
    (trace,) = run(model, tiny_tokenizer, track_attention=False, track_hidden=False)
    assert trace["schema_version"] == SCHEMA_VERSION == 1
    assert trace["settings"] == {"injection_points": [1, 3], "strategy": "append", "noise": "random",
                                 "track_attention": False, "track_hidden": False, "seed": 1234,
                                 "max_new_tokens": 8, "stop_sequences": [], "dtype": "float32",
                                 "score_dtype": "float32"}
    assert trace["prompts"]["original"]["ids"] == tiny_tokenizer.encode(PROBLEM.original_prompt)
    entry = trace["conditions"]["injection@3"]
    assert entry["injected_text"] == PROBLEM.injection_text and entry["prompt"] == "original"
    assert entry["ids"] == entry["pre_ids"] + entry["post_ids"] and len(entry["post_ids"]) == 5
    assert set(entry["series"]) == {"logp_run", "logp_old", "logp_new", "kl_run_new", "kl_run_old",
                                    "kl_old_new", "entropy_run"}


@pytest.mark.parametrize("mutate,field", [
    (lambda t: t.pop("doc_id"), "doc_id"),
    (lambda t: t["conditions"].pop("noise@3"), "conditions.noise@3"),
    (lambda t: t["conditions"]["baseline"].update(stop_reason="done"), "conditions.baseline.stop_reason"),
    (lambda t: t["conditions"]["injection@1"]["series"]["kl_run_new"].pop(), "conditions.injection@1.series.kl_run_new"),
    (lambda t: t["conditions"]["injection@1"]["series"]["attention"].pop("sink"),
     "conditions.injection@1.series.attention.sink"),
    (lambda t: t["conditions"]["noise@1"].update(ids=[1]), "conditions.noise@1.ids"),
    (lambda t: t["conditions"]["noise@1"]["series"]["logp_new"].__setitem__(0, float("nan")),
     "conditions.noise@1.series.logp_new"),
])
def test_validate_trace_names_the_wrong_field(mutate, field, model, tiny_tokenizer):
    (trace,) = run(model, tiny_tokenizer)
    broken = copy.deepcopy(trace)
    mutate(broken)
    with pytest.raises(ValueError, match=f"trace field {re.escape(field)}"):
        validate_trace(broken)
