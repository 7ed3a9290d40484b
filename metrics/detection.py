"""One-sided CUSUM change detector on a fixed horizon, calibrated conformally on the noise runs.

The detector accumulates a per-token statistic x_t (the run's divergence from the old context, or
its log-ratio; nats) over the first tokens after the injection: S_t = max(0, S_{t-1} + x_t - drift),
S_0 = 0, and alarms at the first t <= L with S_t > threshold, where L is the run's evaluated length.

Evaluated length (the same rule for every run of an injection point, so no run is dropped):
- the detection horizon H* = min(H, the k-th longest noise run), k = min(n_alpha, the number of
  noise runs with a token), n_alpha = ceil(1/alpha - 1) (19 at alpha = 0.05), the smallest
  calibration that supports alpha: the longest length that enough noise runs cover to calibrate;
- a run is evaluated over L = min(T, H*) tokens; a run longer than H* is cut at H* (its later
  tokens are not looked at, so a missed alarm there is censored at H*).
Calibration (the null is the noise@N runs: an injection that carries no change of problem):
- a run of evaluated length L is compared with the peaks max_{t<=L} S_t of the noise runs that
  have at least L tokens (at least k of them, since L <= H*), so the null distribution of the
  statistic never depends on run length;
- the threshold is the k-th smallest of those m peaks, k = ceil((m+1)(1-alpha)): a fresh null run
  exchangeable with them alarms with probability <= (m+1-k)/(m+1) <= alpha (conformal);
- when k > m (m < 1/alpha - 1) no threshold supports alpha: the largest peak is used, the bound
  (m+1-k)/(m+1) = 1/(m+1) > alpha is reported, and the detection is flagged uncalibrated;
- a run with tokens is undecided only when no noise run has a token (H* = 0): nothing to compare
  it with; a run with no token is decided (no alarm);
- drift: a fixed setting, or the mean statistic over the noise runs' horizon tokens.

Everything is vectorised over replicate axes, so the same code gives the point estimate, each
bootstrap resample (the calibration re-estimated inside it) and the simulation tests.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np


def cusum(statistic, drift) -> np.ndarray:
    """Page's one-sided CUSUM paths along the last axis (nats, >= 0); drift broadcasts."""
    # S_t = C_t - min(0, min_{s<=t} C_s) with C the cumulative sum of the increments: the
    # recursion in closed form, so no Python loop over tokens.
    cumulative = np.cumsum(np.asarray(statistic, dtype=float) - np.asarray(drift)[..., None], axis=-1)
    return cumulative - np.minimum(np.minimum.accumulate(cumulative, axis=-1), 0.0)


def padded(series_list, horizon: int) -> np.ndarray:
    """(n_runs, horizon) array of each run's first `horizon` values, NaN past its end."""
    matrix = np.full((len(series_list), horizon), np.nan)
    for row, series in enumerate(series_list):
        values = np.asarray(series, dtype=float)[:horizon]
        matrix[row, :values.size] = values
    return matrix


@dataclasses.dataclass(frozen=True)
class Detection:
    """Per replicate r and run j (arrays of shape (R, n_runs)).

    alarm: 1.0 alarm within the run's evaluated length, 0.0 none (always for a run with no token),
    NaN undecided (no noise run has a token); time: first alarm t (1-based) or the evaluated
    length; bound: the conformal false-alarm bound (m+1-k)/(m+1) of the threshold the run was
    compared with (NaN undecided); length: the evaluated length L = min(T, H*).
    """

    alarm: np.ndarray
    time: np.ndarray
    bound: np.ndarray
    length: np.ndarray
    drift: np.ndarray     # (R,)
    horizon: np.ndarray   # (R,) H*: the evaluated length of a run as long as the horizon


def supporting_size(false_alarm_rate: float) -> int:
    """n_alpha: the fewest noise runs whose conformal threshold supports alpha, ceil(1/alpha - 1)."""
    return int(np.ceil(1 / false_alarm_rate - 1 - 1e-9))


def detection_horizon(noise_length: np.ndarray, false_alarm_rate: float) -> np.ndarray:
    """H* per replicate (noise_length (R, n), already capped at H): the k-th longest noise run,
    k = min(n_alpha, number of noise runs with a token); 0 when no noise run has a token."""
    longest_first = -np.sort(-noise_length, axis=-1)
    nonempty = np.sum(noise_length > 0, axis=-1)
    k = np.minimum(supporting_size(false_alarm_rate), nonempty)
    chosen = np.take_along_axis(longest_first, np.maximum(k - 1, 0)[:, None], axis=-1)[:, 0]
    return np.where(k > 0, chosen, 0)


def detect(noise: np.ndarray, runs: np.ndarray, false_alarm_rate: float,
           drift: float | None) -> Detection:
    """Calibrate on `noise` (R, n, H) and detect on `runs` (R, m, H); NaN pads past a run's end."""
    noise, runs = np.asarray(noise, dtype=float), np.asarray(runs, dtype=float)
    noise_length = np.sum(~np.isnan(noise), axis=-1)              # (R, n)
    horizon = detection_horizon(noise_length, false_alarm_rate)   # (R,)
    full_length = np.sum(~np.isnan(runs), axis=-1)                # (R, m)
    run_length = np.minimum(full_length, horizon[:, None])        # evaluated length L
    if drift is None:
        with warnings.catch_warnings():   # no noise token at all: drift 0
            warnings.simplefilter("ignore", RuntimeWarning)
            drift_r = np.nan_to_num(np.nanmean(noise.reshape(noise.shape[0], -1), axis=-1))
    else:
        drift_r = np.full(noise.shape[0], float(drift))
    # Padding contributes nothing; positions past a run's end are masked out below.
    noise_peaks = np.maximum.accumulate(cusum(np.nan_to_num(noise), drift_r[:, None]), axis=-1)
    run_paths = cusum(np.nan_to_num(runs), drift_r[:, None])
    # A run with no token cannot alarm: decided, threshold +inf, bound 0. A run with tokens but
    # L = 0 (no noise token, H* = 0) stays NaN: undecided.
    empty = full_length == 0
    threshold = np.where(empty, np.inf, np.nan)
    bound = np.where(empty, 0.0, np.nan)
    for length in np.unique(run_length):
        if length == 0:
            continue
        peaks = np.where(noise_length >= length, noise_peaks[..., length - 1], np.nan)
        peaks = np.sort(peaks, axis=-1)                          # NaN (too short) sorts last
        usable = np.sum(~np.isnan(peaks), axis=-1)               # m per replicate
        rank = np.minimum(np.ceil((usable + 1) * (1 - false_alarm_rate) - 1e-9), usable).astype(int)
        chosen = np.take_along_axis(peaks, np.maximum(rank - 1, 0)[:, None], axis=-1)[:, 0]
        level = np.where(usable > 0, chosen, np.nan)
        level_bound = np.where(usable > 0, (usable + 1 - rank) / (usable + 1), np.nan)
        here = run_length == length
        threshold = np.where(here, level[:, None], threshold)
        bound = np.where(here, level_bound[:, None], bound)
    positions = np.arange(runs.shape[-1])
    within = positions < run_length[..., None]
    with np.errstate(invalid="ignore"):
        crossing = (run_paths > threshold[..., None]) & within
    alarmed = crossing.any(axis=-1)
    time = np.where(alarmed, crossing.argmax(axis=-1) + 1, run_length).astype(float)
    alarm = np.where(np.isnan(threshold), np.nan, alarmed.astype(float))
    return Detection(alarm=alarm, time=time, bound=bound, length=run_length, drift=drift_r,
                     horizon=horizon)

