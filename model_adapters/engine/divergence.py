"""Per-token reductions of next-token distributions, in fp32 and over the full vocabulary.

Inputs are log-probabilities from ``log_probs`` (log_softmax in fp32, finite for finite logits even at
+-1e4, where softmax-then-log would underflow to log 0). Terms with p = 0 contribute exactly 0
(the 0 log 0 = 0 convention) so an underflowed probability never turns into 0 * inf = NaN; rounding
can push a divergence of identical distributions a hair below 0, so divergences are clamped at 0.
"""
from __future__ import annotations

import torch


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the last dimension, computed in float32."""
    return torch.log_softmax(logits.float(), dim=-1)


def kl_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) in nats over the last dimension."""
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))
    return terms.sum(-1).clamp_min(0.0)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the last dimension."""
    p = logp.exp()
    return torch.where(p > 0, -p * logp, torch.zeros_like(p)).sum(-1).clamp_min(0.0)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine over the last dimension in fp32 (0 where a vector is all zeros)."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-12)
