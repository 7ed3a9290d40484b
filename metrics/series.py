"""Per-token quantities derived from one run's trace series (t = 1..T after the injection).

Pure functions over arrays; every returned series has one entry per post-injection token.
"""

from __future__ import annotations

import numpy as np

from kvinject.trace_schema import SEGMENTS

# Log-probabilities are floored here so that a token one context gives probability 0 (log = -inf)
# still yields a finite log-ratio; the floor is the log of the smallest normal double.
LOG_PROB_FLOOR = float(np.log(np.finfo(float).tiny))

# Renormalised attention uses every segment but the first position (the attention sink).
NON_SINK_SEGMENTS = tuple(segment for segment in SEGMENTS if segment != "sink")


def _without_nan(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    return array


def adaptation_scores(kl_run_old, kl_run_new) -> np.ndarray:
    """a_t = KL(run||old) / (KL(run||old) + KL(run||new)), in [0, 1] (dimensionless).

    0: the run's next-token distribution is the old context's; 1: it is the new context's.
    The 0/0 case (the run equals both contexts, e.g. an identical-problem control) is 0.5: there is
    no evidence either way, and with the strict "> threshold" rule it never counts as adapted.
    Both divergences infinite is likewise 0.5; exactly one infinite gives 0 or 1. Tiny negative
    KLs from floating-point error are treated as 0.
    """
    old = np.clip(_without_nan("kl_run_old", kl_run_old), 0.0, None)
    new = np.clip(_without_nan("kl_run_new", kl_run_new), 0.0, None)
    if old.shape != new.shape:
        raise ValueError(f"kl_run_old has shape {old.shape} but kl_run_new has {new.shape}")
    # Dividing by the larger divergence first keeps the ratio exact for huge or subnormal values
    # (old + new would overflow or underflow).
    scale = np.maximum(old, new)
    finite_scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    old_scaled, new_scaled = old / finite_scale, new / finite_scale
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = old_scaled / (old_scaled + new_scaled)
    scores = np.where(np.isinf(old) & ~np.isinf(new), 1.0, scores)
    scores = np.where(np.isinf(new) & ~np.isinf(old), 0.0, scores)
    undecided = (scale == 0) | (np.isinf(old) & np.isinf(new))
    return np.where(undecided, 0.5, scores)


def adapted_tokens(kl_run_old, kl_run_new, threshold: float, min_kl_gap: float) -> np.ndarray:
    """The "adapted at t" rule, one bool per token: a_t > threshold and KL(run||old) - KL(run||new)
    > min_kl_gap [nats], the minimum effect (metrics/README.md, Definitions)."""
    old = np.asarray(kl_run_old, dtype=float)
    new = np.asarray(kl_run_new, dtype=float)
    return (adaptation_scores(old, new) > threshold) & (old - new > min_kl_gap)


def log_ratios(logp_new, logp_old) -> np.ndarray:
    """r_t = log p_new(tok_t) - log p_old(tok_t) of the run's own token, in nats.

    > 0: the token is better explained by the new context. Finite: both log-probabilities are
    floored at LOG_PROB_FLOOR, so |r_t| <= -LOG_PROB_FLOOR (about 708 nats).
    """
    new = np.maximum(_without_nan("logp_new", logp_new), LOG_PROB_FLOOR)
    old = np.maximum(_without_nan("logp_old", logp_old), LOG_PROB_FLOOR)
    return new - old


def non_sink_masses(attention: dict) -> dict[str, np.ndarray]:
    """Attention mass per segment with the sink removed and the rest renormalised to sum to 1.

    attention: {segment: [[mass per layer] per token]} (head-averaged, as in the trace).
    Returns {segment: array (T, n_layers)} for the non-sink segments, each in [0, 1]. A token and
    layer that put all of its mass on the sink has no non-sink distribution; it gets 0 everywhere.
    """
    masses = {name: np.asarray(attention[name], dtype=float) for name in NON_SINK_SEGMENTS}
    total = sum(masses.values())
    return {
        name: np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)
        for name, mass in masses.items()
    }


def final_window(values: np.ndarray, window_tokens: int) -> np.ndarray:
    """The last `window_tokens` entries along the token axis (all of them if the run is shorter)."""
    return values[-window_tokens:]


def clamped_cosines(values) -> np.ndarray:
    """Cosine similarities clipped to [-1, 1]: fp32 rounding gives 1.000000238, and anything
    taking arccos of that would be NaN."""
    return np.clip(_without_nan("hidden cosine", values), -1.0, 1.0)
