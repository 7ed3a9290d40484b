"""Kaplan-Meier summaries of right-censored times to an event (token counts)."""

from __future__ import annotations

import numpy as np
from scipy import stats

# Survival probabilities are products of fractions: S = 0.5 exactly can come out a hair above.
_HALF = 0.5 + 1e-9


def kaplan_meier_median(times, observed) -> float:
    """Median time to the event (tokens), right-censoring handled by Kaplan-Meier.

    The smallest t with S(t) <= 0.5. When the survival curve never falls to 0.5 (e.g. every run is
    censored) the median is not reached: the result is then max(times) + 1, the smallest value
    consistent with the data (a lower bound; report it with the censored count). NaN only for an
    empty sample.
    """
    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    if times.size == 0:
        return float("nan")
    not_reached = float(times.max() + 1)
    if not observed.any():
        return not_reached
    sample = stats.CensoredData(uncensored=times[observed], right=times[~observed])
    survival = stats.ecdf(sample).sf
    reached = survival.probabilities <= _HALF
    return float(survival.quantiles[reached][0]) if reached.any() else not_reached
