"""Counterfactual (teacher-forced) scoring of a branch's post-injection tokens, inside the decoding loop.

For each branch the same tokens are scored in three contexts (docs/architecture.md section 3): run
(the branch's own context), old (original prompt + pre_ids) and new (alternative prompt + pre_ids).
The run row decodes greedily in the ``DecodingLoop``; the old and new rows join the same step,
starting from the baseline's fork and the oracle's prompt cache, and are teacher-forced along the
run row's tokens, so at every step the three rows' last queries predict the same post-injection
token. The run's own numbers are its decoding step's: nothing is scored twice, and each step is
reduced to per-token numbers at once, so no [T, vocab] tensor outlives its step.
"""
from __future__ import annotations

import dataclasses

import torch

from kvinject.model_adapters.engine.decoding import DecodeResult, DecodeRow, StepOutput
from kvinject.model_adapters.engine.divergence import cosine_similarity, entropy, kl_divergence, log_probs
from kvinject.trace_schema import SEGMENTS, empty_series

GENERATED_AFTER = SEGMENTS.index("generated_after")


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
        labels = torch.nn.utils.rnn.pad_sequence([entry.labels for entry in live], batch_first=True)
        real = step.mask[run_rows]  # [runs, slots]
        # The k-th real slot of a row holds its k-th context token: its label is labels[k].
        slot_labels = labels.gather(1, (real.cumsum(-1) - 1).clamp(0, labels.shape[1] - 1))
        one_hot = torch.nn.functional.one_hot(slot_labels, len(SEGMENTS)).float() * real.unsqueeze(-1)
        weights = torch.stack([a[run_rows, :, -1].float().mean(1) for a in step.attentions], dim=1)
        return torch.bmm(weights, one_hot)
