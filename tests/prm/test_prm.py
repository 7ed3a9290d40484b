"""Legacy PRM scorer (deprecated): judge scores, step splitting, aggregation, end to end on a real run."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kvinject.model_adapters.prm_judge import PRMJudge
from kvinject.prm.aggregate import condition_summaries, discrimination_auc, format_table, step_summary
from kvinject.prm.steps import split_steps
from kvinject.prm.trace_scores import score_records

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATE = "{problem}{previous} Step: {step} Verdict:"


@pytest.fixture
def char_tokenizer(tiny_tokenizer_class):
    tokenizer = tiny_tokenizer_class(eos_token_id=2)
    tokenizer.chars.append("\n")  # judge prompts put earlier steps on their own lines
    return tokenizer


class FavouringJudgeModel(torch.nn.Module):
    """Logits that favour one token id by ``margin`` (scaled by a random per-position amount)."""

    def __init__(self, vocab_size, favoured, margin):
        super().__init__()
        self.vocab_size, self.favoured, self.margin = vocab_size, favoured, margin

    def forward(self, input_ids, attention_mask, logits_to_keep):
        generator = torch.Generator().manual_seed(int(input_ids.sum()))
        logits = torch.randn(*input_ids.shape, self.vocab_size, generator=generator)
        logits[..., self.favoured] += self.margin
        return SimpleNamespace(logits=logits[:, logits_to_keep])


PROMPTS = ["Question: What is 3 + 5? Answer:", "Question: What is 40 - 2? Answer:", "Q: 2 * 3?"]


@pytest.mark.parametrize("favoured, sign", [("g", 1), ("b", -1)])
def test_a_judge_favouring_good_scores_positive_and_bad_negative_within_bounds(char_tokenizer, favoured, sign):
    model = FavouringJudgeModel(len(char_tokenizer), char_tokenizer.encode(favoured, add_special_tokens=False)[0], 6.0)
    judge = PRMJudge(model, char_tokenizer, TEMPLATE, good="g", bad="b", batch_size=2)
    steps = ["3 + 5 = 8.", "The answer is 8.", "so 8"]
    scores = judge.score([p for problem in PROMPTS for p in judge.step_prompts(problem, steps)])
    assert scores.shape == (9,) and np.all(np.sign(scores) == sign) and np.all(np.abs(scores) <= 1)


def test_scores_are_the_renormalised_pair_and_padding_never_changes_them(char_tokenizer, tiny_model_builder):
    model = tiny_model_builder("llama", vocab_size=len(char_tokenizer))
    judge = PRMJudge(model, char_tokenizer, TEMPLATE, good="g", bad="b", batch_size=3)
    batched = judge.score(PROMPTS)
    single = PRMJudge(model, char_tokenizer, TEMPLATE, good="g", bad="b", batch_size=1).score(PROMPTS)
    np.testing.assert_allclose(batched, single, atol=1e-6)
    with torch.no_grad():
        logits = model(torch.tensor([char_tokenizer.encode(PROMPTS[1])])).logits[0, -1].double()
    good, bad = char_tokenizer.encode("gb", add_special_tokens=False)
    pair = torch.softmax(logits[[good, bad]], 0)
    assert batched[1] == pytest.approx(float(pair[0] - pair[1]), abs=1e-6)


def test_judge_settings_are_checked(char_tokenizer):
    with pytest.raises(ValueError, match="placeholders"):
        PRMJudge(None, char_tokenizer, "{problem} {step}", good="g", bad="b")
    with pytest.raises(ValueError, match="answer good='good' is 4 tokens"):
        PRMJudge(None, char_tokenizer, TEMPLATE, good="good", bad="b")
    with pytest.raises(ValueError, match="same token"):
        PRMJudge(None, char_tokenizer, TEMPLATE, good="g", bad="g")


def test_steps_split_on_newlines_and_sentence_ends_but_not_decimals():
    assert split_steps("First, 3.5 + 1 = 4.5. Then double it!\n\n  So 9?  Yes\n\\boxed{9}.") == [
        "First, 3.5 + 1 = 4.5.", "Then double it!", "So 9?", "Yes", "\\boxed{9}."]
    assert split_steps(" \n ") == []


def test_summaries_order_conditions_and_bootstrap_over_docs():
    per_doc = {f"d{i}": {"noise@5": step_summary([-0.5, -0.1 * i]), "baseline": step_summary([0.2]),
                         "injection@5": step_summary([0.5, 0.3]), "oracle": step_summary([0.9]),
                         "injection@10": step_summary([])} for i in range(6)}
    rows = condition_summaries(per_doc, resamples=200, seed=1)
    assert [r["condition"] for r in rows] == ["baseline", "oracle", "injection@5", "noise@5", "injection@10"]
    noise = rows[3]
    assert noise["docs"] == 6 and noise["mean"] == pytest.approx(np.mean([(-0.5 - 0.1 * i) / 2 for i in range(6)]))
    assert noise["min"] == pytest.approx(np.mean([-0.5] * 6))
    assert noise["mean_interval"][0] <= noise["mean"] <= noise["mean_interval"][1]
    assert rows[4]["docs"] == 0 and rows[4]["mean"] is None
    table = format_table(rows)
    assert "| injection@5 | 6 | +0.400 [+0.400, +0.400] | +0.300 [+0.300, +0.300] |" in table
    assert "| injection@10 | 0 | – | – |" in table


def test_discrimination_auc_is_chance_for_ties_and_one_for_perfect_separation():
    assert discrimination_auc([0.5, 0.9], [0.1, -0.2]) == 1.0
    assert discrimination_auc([0.1, 0.1], [0.1]) == 0.5
    assert discrimination_auc([0.0, 1.0], [0.5]) == 0.5


def test_each_condition_is_judged_against_the_problem_it_should_solve(char_tokenizer):
    seen = []

    class RecordingJudge(PRMJudge):
        def score(self, prompts, progress=None):
            seen.extend(prompts)
            return np.linspace(-1, 1, len(prompts))

    trace = {"doc_id": 7, "prompts": {"original": {"text": "ORIG"}, "alternative": {"text": "ALT"}},
             "conditions": {"baseline": {"text": "a. b"}, "oracle": {"text": "c"}, "noise@1": {"text": ""}}}
    scores = score_records([{"task": "t", "trace": trace}], RecordingJudge(None, char_tokenizer, TEMPLATE, "g", "b"))
    assert seen[0].startswith("ORIG Step: a.") and seen[1].startswith("ORIG\na. Step: b") and seen[2].startswith("ALT Step: c")
    doc = scores["t"]["7"]
    assert doc["baseline"]["scores"] == [-1.0, 0.0] and doc["baseline"]["min"] == -1.0 and doc["oracle"]["mean"] == 1.0
    assert doc["noise@1"] == {"steps": [], "scores": [], "mean": None, "min": None, "n_steps": 0}


# ----------------------------------------------------------------------------- real model (slow)

@pytest.fixture(scope="session")
def smollm2_results(tmp_path_factory):
    """A real results folder: SmolLM2 on two math docs, injection points 1 and 2, 16 tokens."""
    if not os.environ.get("KVINJECT_MAWPS_SOURCE"):
        pytest.skip("KVINJECT_MAWPS_SOURCE is not set (CI points it at ../shared/data/mawps/svamp/cv_mawps)")
    output = tmp_path_factory.mktemp("smollm2-results")
    command = [str(Path(sys.executable).parent / "lm_eval"), "--model", "kvinject", "--model_args",
               "pretrained=smollm2-135m,injection_points=1:2", "--tasks", "adaptation_math",
               "--limit", "2", "--gen_kwargs", "max_gen_toks=16", "--output_path", str(output)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return output


@pytest.mark.slow
def test_kvinject_prm_scores_a_real_run_end_to_end(smollm2_results, capsys, tmp_path):
    import csv

    from kvinject.cli import main

    assert main(["prm", str(smollm2_results), "--judge", "smollm2-135m", "--resamples", "100"]) == 0
    [traces] = list(smollm2_results.rglob("traces_*.jsonl*"))
    [written] = list(smollm2_results.rglob("prm_*.json"))
    assert written.name == "prm_smollm2-135m_" + traces.name.split(".jsonl")[0] + ".json"
    result = json.loads(written.read_text())
    assert result["deprecated"]
    docs = result["docs"]["adaptation_math"]
    assert len(docs) == 2
    scores = [s for doc in docs.values() for c in doc.values() for s in c["scores"]]
    assert scores and all(-1 <= s <= 1 for s in scores)
    conditions = [row["condition"] for row in result["summary"]["adaptation_math"]]
    assert conditions == ["baseline", "oracle", "injection@1", "noise@1", "injection@2", "noise@2"]
    assert "| injection@1 | " in capsys.readouterr().out
    # the report shows the scores as PRM columns, copied from the PRM JSON
    assert main(["report", str(smollm2_results), "--output_path", str(tmp_path / "report")]) == 0
    [row] = list(csv.DictReader((tmp_path / "report" / "leaderboard.csv").open()))
    summary = {r["condition"]: r for r in result["summary"]["adaptation_math"]}
    shown = [name[4:] for name in row if name.startswith("prm_") and not name.endswith(("_ci_low", "_ci_high", "_stderr"))]
    assert {"oracle", "injection@1", "injection@2"} <= set(shown), shown
    for condition in shown:
        mean = summary[condition]["mean"]
        assert (row[f"prm_{condition}"] == "" if mean is None else float(row[f"prm_{condition}"]) == mean), condition
    assert "DEPRECATED legacy PRM" in (tmp_path / "report" / "leaderboard.md").read_text()


@pytest.mark.slow
def test_smollm2_discrimination_of_correct_and_wrong_arithmetic_steps_is_measured(capsys):
    from kvinject.model_adapters.loading import load_model_and_tokenizer
    from kvinject.model_adapters.model_args import parse_model_args

    model, tokenizer, _ = load_model_and_tokenizer(parse_model_args({"pretrained": "smollm2-135m"}))
    judge = PRMJudge(model, tokenizer)
    pairs = json.loads((FIXTURES / "prm_arithmetic_steps.json").read_text())
    correct = judge.score([judge.step_prompts(p["problem"], [p["correct"]])[0] for p in pairs])
    wrong = judge.score([judge.step_prompts(p["problem"], [p["wrong"]])[0] for p in pairs])
    auc = discrimination_auc(correct, wrong)
    with capsys.disabled():
        print(f"\nSmolLM2-135M PRM discrimination: AUC {auc:.2f}, mean score correct {correct.mean():+.3f}, "
              f"wrong {wrong.mean():+.3f}, correct > wrong in {int(np.sum(correct > wrong))}/10 pairs")
    assert len(correct) == len(wrong) == 10 and 0 <= auc <= 1


def test_condition_interval_covers_the_true_mean_step_score_at_about_its_level():
    """Estimand: the mean over docs of a doc's mean step score. Simulated docs whose step scores are
    2 * Beta(4, 2) - 1 (true mean 1/3, in [-1, 1]); 200 replicates of 30 docs: the 95% bootstrap
    interval should cover 1/3 in about 95% of them (binomial sd 1.5 points)."""
    rng = np.random.default_rng(0)
    covered = 0
    for replicate in range(200):
        per_doc = {f"d{i}": {"injection@5": step_summary(2 * rng.beta(4, 2, size=rng.integers(1, 6)) - 1)}
                   for i in range(30)}
        low, high = condition_summaries(per_doc, resamples=300, seed=replicate)[0]["mean_interval"]
        covered += low <= 1 / 3 <= high
    assert 0.89 <= covered / 200 <= 0.99
