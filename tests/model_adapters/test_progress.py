"""The adapter's per-batch progress bar shows the branches run and the generation speed."""
import re

from lm_eval.api.instance import Instance

from kvinject.model_adapters.harness_model import KVInjectLM, generated_tokens


def test_the_bar_reports_branches_and_tokens_per_second(local_model_dir, tmp_path, capsys):
    lm = KVInjectLM(pretrained=str(local_model_dir), injection_points="1:2", batch_size=2, trace_dir=str(tmp_path))
    requests = [
        Instance(request_type="generate_until",
                 doc={"id": f"d{i}", "original_question": "What is 3 + 5?", "alternative_question": "What is 4 + 5?"},
                 arguments=("Question: What is 3 + 5?\nAnswer:", {"until": ["\n\n"], "max_gen_toks": 5}),
                 idx=0, metadata=("t", i, 1))
        for i in range(2)
    ]
    outputs = lm.generate_until(requests)
    err = capsys.readouterr().err
    assert "kvinject docs" in err
    assert "branches=12" in err  # 2 docs x (baseline, oracle, injection and noise at 2 points)
    speed = float(re.findall(r"tokens_per_s=([0-9.]+)", err)[-1])
    assert speed > 0
    # the count behind the speed: every branch's own generated tokens, the shared prefix counted once
    trace = outputs[0].trace
    expected = len(trace["conditions"]["baseline"]["ids"]) + len(trace["conditions"]["oracle"]["ids"]) + sum(
        len(entry["post_ids"]) for name, entry in trace["conditions"].items() if "@" in name)
    assert generated_tokens(trace) == expected > 0
