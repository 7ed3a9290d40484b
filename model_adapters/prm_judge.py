"""Legacy PRM judge (DEPRECATED; kept to compare with the original study): a causal LM rates steps.

For each step the judge reads ``template.format(problem=..., previous=..., step=...)`` and the
score is P(good) - P(bad), the two answer tokens' next-token probabilities renormalised over the
pair: with logits g and b, P(good) = e^g / (e^g + e^b), so the score is tanh((g - b) / 2), in [-1, 1].
Each answer must be one token when tokenised as a segment (checked at construction). Prompts are
encoded like the engine's (tokens.encode_prompt), right-padded in batches; each row's prediction
is read at its own last token, so padding never changes a score. The model must accept
``logits_to_keep`` as a tensor of positions (every transformers causal LM does).
"""
from __future__ import annotations

import string
from typing import Sequence

import numpy as np

from kvinject.model_adapters.engine.tokens import encode_prompt, encode_segment

DEFAULT_TEMPLATE = (
    "{problem}{previous}\n\nA teacher checks the next step of this solution.\n"
    "Step: {step}\nIs this step correct? Answer good or bad.\nVerdict:"
)
DEFAULT_GOOD, DEFAULT_BAD = " good", " bad"
_FIELDS = {"problem", "previous", "step"}


class PRMJudge:
    def __init__(self, model, tokenizer, template: str = DEFAULT_TEMPLATE, good: str = DEFAULT_GOOD,
                 bad: str = DEFAULT_BAD, batch_size: int = 8):
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if fields != _FIELDS:
            raise ValueError(f"PRM template must use exactly the placeholders {{problem}}, {{previous}}, {{step}} "
                             f"(got {sorted(fields)})")
        self.answer_ids = []
        for name, text in (("good", good), ("bad", bad)):
            ids = encode_segment(tokenizer, text)
            if len(ids) != 1:
                raise ValueError(f"PRM answer {name}={text!r} is {len(ids)} tokens for this judge's tokenizer; give a "
                                 "one-token answer (e.g. with or without a leading space)")
            self.answer_ids.append(ids[0])
        if self.answer_ids[0] == self.answer_ids[1]:
            raise ValueError(f"PRM answers good={good!r} and bad={bad!r} are the same token")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        self.model, self.tokenizer, self.template, self.batch_size = model, tokenizer, template, batch_size

    def step_prompts(self, problem: str, steps: Sequence[str]) -> list[str]:
        """One judge prompt per step; ``previous`` is the earlier steps, each on its own line."""
        return [self.template.format(problem=problem, previous="".join("\n" + s for s in steps[:i]), step=step)
                for i, step in enumerate(steps)]

    def score(self, prompts: Sequence[str], progress=None) -> np.ndarray:
        """P(good) - P(bad) per prompt, float64 in [-1, 1]; ``progress`` (a tqdm bar) advances per prompt."""
        import torch

        scores = []
        device = self.model.device if hasattr(self.model, "device") else "cpu"
        for start in range(0, len(prompts), self.batch_size):
            encoded = [encode_prompt(self.tokenizer, p) for p in prompts[start : start + self.batch_size]]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.zeros(len(encoded), width, dtype=torch.long)
            attention_mask = torch.zeros(len(encoded), width, dtype=torch.long)
            for row, ids in enumerate(encoded):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
            # Only the rows' last positions are needed: computing the vocabulary logits of every
            # position would dominate the cost (batch x length x vocabulary).
            last = [len(ids) - 1 for ids in encoded]
            keep = sorted(set(last))
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                    logits_to_keep=torch.tensor(keep, device=device)).logits
            column = torch.tensor([keep.index(position) for position in last], device=logits.device)
            pair = logits[torch.arange(len(encoded), device=logits.device), column][:, self.answer_ids].double()
            scores.extend(torch.tanh((pair[:, 0] - pair[:, 1]) / 2).tolist())
            if progress is not None:
                progress.update(len(encoded))
        return np.asarray(scores, dtype=np.float64)
