"""SmolLM2-135M-Instruct in bfloat16 on the CPU against float32 (metrics/README.md "Precision").

- identical controls (alternative = original) are never judged adapted: their old and new contexts
  are computed alike, so |KL(run||old) - KL(run||new)| is exactly 0 (issue 22: 23 of 24 runs were
  "adapted" in bf16 before, from rounding alone);
- a changed doc's measures agree with float32 on the tokens both precisions generated alike: per
  token |delta KL| <= KL_TOLERANCE and |delta gap| <= the bf16 resolution KL_GAP_RESOLUTION; the
  adapted rule (with the trace's precision-raised minimum gap) agrees wherever float32's gap is
  outside the band the precision cannot resolve; the mean KL(run||new) over those tokens within
  MEAN_KL_TOLERANCE. After the first differing greedy token the two runs are different samples.
"""
import copy

import numpy as np
import pytest
import torch

from kvinject.metrics import AdaptationSettings, doc_metrics
from kvinject.metrics.settings import KL_GAP_RESOLUTION, min_kl_gap
from kvinject.model_adapters.engine import InjectionEngine, InjectionSettings, Problem

pytestmark = pytest.mark.slow

SETTINGS = InjectionSettings(injection_points=(4, 8), track_attention=False, track_hidden=False)
KL_TOLERANCE = 0.5        # nats per token (measured max 0.31 with bf16 scoring in the loop; 0.26 before)
MEAN_KL_TOLERANCE = 0.15  # nats, mean over a run's shared tokens
ITEMS = ["apples", "pencils", "marbles", "stickers", "cookies", "books"]


def _question(i: int, change: int = 0) -> str:
    return (f"Question: Sam has {3 + i} {ITEMS[i % 6]} and buys {5 + i + change} more. "
            f"How many {ITEMS[i % 6]} does he have now?\nAnswer:")


def _problem(doc_id: str, original: str, alternative: str) -> Problem:
    return Problem(doc_id, original, alternative,
                   f"\n\nWait, the problem has changed. The new problem is: {alternative.removesuffix('Answer:')}"
                   "Solving the new problem:", 24, ())


@pytest.fixture(scope="module")
def bf16_smollm2(smollm2):
    model, tokenizer = smollm2
    return copy.deepcopy(model).to(torch.bfloat16), tokenizer


def test_identical_controls_are_not_adapted_in_bfloat16(bf16_smollm2):
    model, tokenizer = bf16_smollm2
    controls = [_problem(f"control{i}", _question(i), _question(i)) for i in range(12)]
    traces = InjectionEngine(model, tokenizer, SETTINGS, batch_size=4).run(controls)
    settings = AdaptationSettings(report="full")
    adapted = runs = 0
    for trace in traces:
        assert trace["settings"]["dtype"] == "bfloat16" and trace["settings"]["score_dtype"] == "bfloat16"
        for name, entry in trace["conditions"].items():
            if "@" in name and entry["injected"]:
                series = entry["series"]
                # exactly equal, so not even float32's minimum gap (0.01) could see a difference
                assert series["kl_run_old"] == series["kl_run_new"], (trace["doc_id"], name)
        values = doc_metrics(trace, {}, settings)
        for point in SETTINGS.injection_points:
            event = values[f"adaptation_point_vs_controls_pvalue@{point}"]["run"]
            runs += 1
            adapted += event["status"] == "event" and event["time"] <= settings.horizon_tokens
            assert values[f"kl_noise_floor@{point}"] == 0.0
    assert runs == 24 and adapted / runs <= 0.05


def _shared_tokens(reference: dict, other: dict) -> int:
    """How many post-injection tokens the two runs generated alike (0 if their pre_ids differ)."""
    if reference["pre_ids"] != other["pre_ids"] or not (reference["injected"] and other["injected"]):
        return 0
    pairs = list(zip(reference["post_ids"], other["post_ids"]))
    return next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))


def test_changed_docs_agree_with_float32_within_the_bfloat16_resolution(smollm2, bf16_smollm2):
    changed = [_problem(f"changed{i}", _question(i), _question(i, change=4)) for i in range(3)]
    reference = InjectionEngine(smollm2[0], smollm2[1], SETTINGS, batch_size=3).run(changed)
    traces = InjectionEngine(*bf16_smollm2, SETTINGS, batch_size=3).run(changed)
    resolution = KL_GAP_RESOLUTION[("bfloat16", "bfloat16")]  # scoring runs in the model's dtype
    settings = AdaptationSettings()
    gap_float32 = min_kl_gap(settings, reference[0]["settings"])
    gap_bf16 = min_kl_gap(settings, traces[0]["settings"])
    assert (gap_float32, gap_bf16) == (settings.adapted_min_kl_gap, resolution)
    compared = 0
    for expected, found in zip(reference, traces):
        for name in expected["conditions"]:
            shared = _shared_tokens(expected["conditions"][name], found["conditions"][name]) if "@" in name else 0
            if not shared:
                continue
            a, b = (trace["conditions"][name]["series"] for trace in (expected, found))
            series = {key: (np.array(a[key][:shared]), np.array(b[key][:shared])) for key in ("kl_run_old", "kl_run_new")}
            for key, (left, right) in series.items():
                assert np.abs(left - right).max() <= KL_TOLERANCE, (name, key)
            assert abs(series["kl_run_new"][0].mean() - series["kl_run_new"][1].mean()) <= MEAN_KL_TOLERANCE, name
            gap = [old - new for old, new in zip(series["kl_run_old"], series["kl_run_new"])]
            assert np.abs(gap[0] - gap[1]).max() <= resolution, name
            adapted = [gap[0] > gap_float32, gap[1] > gap_bf16]
            resolved = (gap[0] <= 0) | (gap[0] > 2 * resolution)  # outside the band bf16 cannot resolve
            assert (adapted[0] == adapted[1])[resolved].all(), name
            compared += shared
    assert compared >= 40  # the comparison is not vacuous
