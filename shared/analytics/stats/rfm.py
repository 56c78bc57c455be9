"""RFM scoring: recency, frequency and monetary scores 1-5 by population quintiles.

Each dimension is scored from its mid-rank percentile in the population: with ``rank`` the
average rank of the value (ties share one rank, ``scipy.stats.rankdata(method="average")``) and
``n`` the population size, ``pct = (rank - 0.5) / n`` lies in (0, 1) and the score is
``ceil(5 * pct)`` clipped to 1..5.  Consequences:

* equal values always get equal scores (robust to the heavy ties of purchase counts);
* quintiles are as even as the ties allow (20 % of a tie-free population per score);
* a population of one customer scores 3 on each dimension (the median), never fails.

Recency is "more recent is better": the score is computed on ``-days_since_last_purchase``.
Frequency and monetary use the values as given (e.g. ``n_purchases`` or repeat ``frequency``,
and ``total_spent``).  The combined code is the three digits "RFM" (e.g. ``"545"``) and
``total`` is their sum (3..15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

__all__ = ["RFMScores", "quintile_breakpoints", "quintile_scores", "rfm_scores", "score_with_breakpoints"]


@dataclass(frozen=True)
class RFMScores:
    recency: np.ndarray      # int8 1..5, 5 = most recent
    frequency: np.ndarray    # int8 1..5, 5 = most frequent
    monetary: np.ndarray     # int8 1..5, 5 = highest spend
    code: np.ndarray         # str, e.g. "545"
    total: np.ndarray        # int, recency + frequency + monetary (3..15)


def quintile_scores(values: npt.ArrayLike) -> np.ndarray:
    """Score 1..5 by mid-rank percentile (higher value, higher score); ties share a score."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.zeros(0, dtype=np.int8)
    if np.isnan(v).any():
        raise ValueError("values must not contain NaN")
    pct = (rankdata(v, method="average") - 0.5) / v.size
    return np.clip(np.ceil(5.0 * pct), 1, 5).astype(np.int8)


def rfm_scores(
    days_since_last_purchase: npt.ArrayLike, frequency: npt.ArrayLike, monetary: npt.ArrayLike
) -> RFMScores:
    """RFM scores for aligned per-customer arrays (see module docstring)."""
    d = np.asarray(days_since_last_purchase, dtype=np.float64).ravel()
    f = np.asarray(frequency, dtype=np.float64).ravel()
    m = np.asarray(monetary, dtype=np.float64).ravel()
    if not (d.shape == f.shape == m.shape):
        raise ValueError("inputs must have the same length")
    r_s = quintile_scores(-d)
    f_s = quintile_scores(f)
    m_s = quintile_scores(m)
    digits = (r_s.astype(np.int64) * 100 + f_s.astype(np.int64) * 10 + m_s).astype(np.int64)
    code = digits.astype("U3")
    total = r_s.astype(np.int64) + f_s + m_s
    return RFMScores(r_s, f_s, m_s, code, total)


def quintile_breakpoints(values: npt.ArrayLike) -> list[float | None]:
    """Where scores 2, 3, 4 and 5 begin in a population: the smallest value scoring at least
    k + 1, for k = 1..4 (None when no value scores that high, e.g. in a population of one).

    ``score_with_breakpoints(v, quintile_breakpoints(v))`` equals ``quintile_scores(v)`` for every
    member of the population (scores are monotone in the value and ties share one), and scores
    any other value by where it falls among them: what a fitted model stores instead of the
    population itself, so one customer is scored without reading everyone.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    scores = quintile_scores(v)
    return [float(v[scores >= k + 1].min()) if np.any(scores >= k + 1) else None for k in range(1, 5)]


def score_with_breakpoints(values: npt.ArrayLike, breakpoints: Sequence[float | None]) -> np.ndarray:
    """Scores 1..5: one plus the number of breakpoints the value reaches (see quintile_breakpoints)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    score = np.ones(v.shape, dtype=np.int8)
    for start in breakpoints:
        if start is not None:
            score += (v >= start).astype(np.int8)
    return score
