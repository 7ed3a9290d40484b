"""One-sided CUSUM change detector, calibrated on the noise@N runs of the same task.

The detector accumulates a per-token statistic x_t (the run's divergence from the old context, or
its log-ratio; nats) after the injection point: S_t = max(0, S_{t-1} + x_t - drift), S_0 = 0, and
raises an alarm at the first t with S_t > threshold. The noise runs are the null (an injection
that carries no change of problem), so the threshold is the smallest value that at most
`false_alarm_rate` of them exceed anywhere in their window.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .events import first_time


@dataclasses.dataclass(frozen=True)
class Calibration:
    """drift and threshold in the statistic's units (nats); false alarms among the noise runs."""

    drift: float
    threshold: float
    noise_runs: int
    noise_alarms: int


def cusum(statistic, drift: float) -> np.ndarray:
    """Page's one-sided CUSUM path S_1..S_T (nats, >= 0) of a statistic series."""
    # S_t = C_t - min(0, min_{s<=t} C_s) with C the cumulative sum of the increments: the
    # recursion in closed form, so no Python loop over tokens.
    cumulative = np.cumsum(np.asarray(statistic, dtype=float) - drift)
    return cumulative - np.minimum(np.minimum.accumulate(cumulative), 0.0)


def calibrate(noise_statistics, false_alarm_rate: float, drift: float | None) -> Calibration:
    """Drift and threshold from the noise runs' statistic series (at least one run).

    drift None: the mean of the statistic over all noise tokens (its finite values; 0 if there
    are none), the textbook reference level: under the null the increments then average 0.
    In-sample, at most floor(false_alarm_rate * n_runs) noise runs raise an alarm; for a new run
    from the same distribution the alarm probability is at most that count / (n_runs + 1).
    """
    runs = [np.asarray(series, dtype=float) for series in noise_statistics]
    if not runs:
        raise ValueError("calibration needs at least one noise run")
    if drift is None:
        tokens = np.concatenate(runs)
        tokens = tokens[np.isfinite(tokens)]
        drift = float(tokens.mean()) if tokens.size else 0.0
    peaks = np.sort([cusum(run, drift).max(initial=0.0) for run in runs])
    allowed_alarms = math.floor(false_alarm_rate * len(runs))
    threshold = float(peaks[len(runs) - allowed_alarms - 1])
    return Calibration(
        drift=float(drift),
        threshold=threshold,
        noise_runs=len(runs),
        noise_alarms=int(np.sum(peaks > threshold)),
    )


def detection_time(statistic, calibration: Calibration) -> dict:
    """First t with S_t > threshold as {"time", "observed"}; censored at T if no alarm."""
    return first_time(cusum(statistic, calibration.drift) > calibration.threshold)
