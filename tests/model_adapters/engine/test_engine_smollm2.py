"""The engine on the real SmolLM2-135M-Instruct (fp32, CPU): exactness against full recomputation.
(Forked append against one forward pass on SmolLM2: test_engine_exactness.py.)"""
import pytest
import torch

from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem
from kvinject.trace_schema import validate_trace

pytestmark = pytest.mark.slow

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have now?"
ALTERNATIVE = "Tom has 3 apples and buys 7 more. How many apples does he have now?"
PROBLEMS = [
    Problem("apples", f"Question: {QUESTION}\nAnswer:", f"Question: {ALTERNATIVE}\nAnswer:",
            f"\n\nWait, the problem has changed. The new problem is: {ALTERNATIVE}\nSolving the new problem:",
            20, ("Question:",)),
    Problem("capital", "Q: What is the capital of France?\nA:", "Q: What is the capital of Italy?\nA:",
            " Correction: the question is about Italy.", 20, ("\n\n",)),
]


def test_engine_traces_on_smollm2(smollm2):
    model, tokenizer = smollm2
    traces = InjectionEngine(model, tokenizer, InjectionSettings(injection_points=(0, 5)), batch_size=2).run(PROBLEMS)
    for trace in traces:
        validate_trace(trace)
        original, alternative = trace["prompts"]["original"]["ids"], trace["prompts"]["alternative"]["ids"]
        entry = trace["conditions"]["injection@5"]
        assert entry["injected"]
        pre, post, injected = entry["pre_ids"], entry["post_ids"], entry["injected_ids"]
        with torch.no_grad():
            run = torch.log_softmax(model(input_ids=torch.tensor([original + pre + injected + post])).logits[0].float(), -1)
            new = torch.log_softmax(model(input_ids=torch.tensor([alternative + pre + post])).logits[0].float(), -1)
        run = run[len(original + pre + injected) - 1 : -1]
        new = new[len(alternative + pre) - 1 : -1]
        targets = torch.tensor(post)[:, None]
        assert torch.tensor(entry["series"]["logp_run"]).sub(run.gather(1, targets)[:, 0]).abs().max() <= 1e-4
        assert torch.tensor(entry["series"]["logp_new"]).sub(new.gather(1, targets)[:, 0]).abs().max() <= 1e-4
        attention = entry["series"]["attention"]
        totals = torch.tensor([attention[s] for s in attention]).sum(0)
        assert totals.sub(1).abs().max() <= 1e-4
        for name, condition in trace["conditions"].items():
            for stop in trace["settings"]["stop_sequences"]:
                assert stop not in condition["text"], name


def test_replace_at_zero_is_the_oracle_on_smollm2(smollm2):
    model, tokenizer = smollm2
    settings = InjectionSettings(injection_points=(0, 4), strategy="replace", track_attention=False, track_hidden=False)
    for trace in InjectionEngine(model, tokenizer, settings, batch_size=2).run(PROBLEMS):
        validate_trace(trace)
        assert trace["conditions"]["injection@0"]["ids"] == trace["conditions"]["oracle"]["ids"]
