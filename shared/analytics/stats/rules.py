"""The companion guide's business rules (ТЕМА 5: ``segment_user`` and ``predict_churn``), exactly.

Segment (the guide's ``segment_user``, same order of tests):

    if days_since_last_purchase > 90:                              DORMANT
    elif total_spent > 1000:                                       VIP
    elif total_spent < 100 and days_since_last_purchase < 30:      AT_RISK
    else:                                                          ACTIVE

``days_since_last_purchase`` is the guide's ``(now - max(purchase dates)).days``, i.e. whole days
truncated the way ``datetime.timedelta.days`` does (floor).  A user with NO purchase: the guide
computes ``max([...] or [datetime.utcnow()])``, i.e. uses *now* as the last purchase, so
``days = 0`` and ``total_spent = 0``, which falls through to **AT_RISK** (0 < 100 and 0 < 30).
:func:`days_since_last_purchase` reproduces that (``None`` -> 0).

Churn risk (the guide's ``predict_churn``): ``100 / (1 + exp(-(days - 30) / 20))`` percent.
NOTE: the table printed under that code in the guide (5 -> 13.5, 15 -> 29.2, 45 -> 70.8,
60 -> 86.5) is NOT what the formula gives; the formula gives 5 -> 22.3, 15 -> 32.1, 30 -> 50.0,
45 -> 67.9, 60 -> 81.8.  No logistic in ``days - 30`` reproduces the printed table (5 and 60 are
25 and 30 days from the midpoint yet mirror each other), so we implement the code, not the table.

Engagement score (not specified by the guide; our definition), 0..100:

    score = 100 * (0.35 * R + 0.25 * A + 0.20 * F + 0.20 * M)
    R = exp(-days_since_last_activity / 30)          recency of ANY activity (1 today, 0.37 at 30 d)
    A = 1 - exp(-events_last_30_days / 20)           activity volume in the last 30 days
    F = 1 - exp(-n_purchases / 5)                    purchase frequency (0.63 at 5 purchases)
    M = 1 - exp(-total_spent / 500)                  spend (0.63 at 500)

Every component is a saturating transform in [0, 1] and the weights sum to 1, so the score is
in [0, 100].  Inputs are sanitised so that this holds for ANY input: negative counts / spend /
days are clipped to 0, NaN counts as "nothing" (0 activity, or never active for the recency:
``days_since_last_activity=None`` or NaN or +inf gives R = 0).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from scipy.special import expit

__all__ = [
    "DORMANT", "VIP", "AT_RISK", "ACTIVE",
    "days_since_last_purchase", "segments", "churn_risks", "engagement_scores",
    "ENGAGEMENT_WEIGHTS",
]

DORMANT, VIP, AT_RISK, ACTIVE = "DORMANT", "VIP", "AT_RISK", "ACTIVE"

ENGAGEMENT_WEIGHTS = {"recency": 0.35, "activity": 0.25, "frequency": 0.20, "monetary": 0.20}
_RECENCY_SCALE_DAYS = 30.0
_ACTIVITY_SCALE = 20.0
_FREQUENCY_SCALE = 5.0
_MONETARY_SCALE = 500.0


def days_since_last_purchase(purchase_dates: Iterable[_dt.datetime], now: _dt.datetime) -> int:
    """The guide's ``(now - max(dates or [now])).days``: 0 for a user without purchases."""
    dates = list(purchase_dates)
    last = max(dates) if dates else now
    return (now - last).days


def segments(days_since_last_purchase: npt.ArrayLike, total_spent: npt.ArrayLike) -> np.ndarray:
    """The guide's segment of each user (``np.select`` keeps the guide's first-match order; see the
    module docstring); one user is an array of one."""
    d = np.asarray(days_since_last_purchase, dtype=np.float64)
    s = np.asarray(total_spent, dtype=np.float64)
    d, s = np.broadcast_arrays(d, s)
    return np.select(
        [d > 90, s > 1000, (s < 100) & (d < 30)],
        [DORMANT, VIP, AT_RISK],
        default=ACTIVE,
    ).astype("U7")


def churn_risks(days_since_last_purchase: npt.ArrayLike) -> np.ndarray:
    """The guide's ``predict_churn`` of each user, in percent: 100 / (1 + exp(-(days - 30) / 20)),
    as ``scipy.special.expit``, which never overflows."""
    d = np.asarray(days_since_last_purchase, dtype=np.float64)
    return 100.0 * expit((d - 30.0) / 20.0)


def engagement_scores(days_since_last_activity: npt.ArrayLike, events_last_30_days: npt.ArrayLike,
                      n_purchases: npt.ArrayLike, total_spent: npt.ArrayLike) -> np.ndarray:
    """Engagement 0..100 of each user (formula in the module docstring); NaN days (never active)
    give a recency term of 0."""
    d = np.asarray(days_since_last_activity, dtype=np.float64)
    e = np.asarray(events_last_30_days, dtype=np.float64)
    n = np.asarray(n_purchases, dtype=np.float64)
    s = np.asarray(total_spent, dtype=np.float64)
    d, e, n, s = np.broadcast_arrays(d, e, n, s)

    def clean(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.where(np.isnan(v) | (v < 0), 0.0, v)

    with np.errstate(over="ignore", invalid="ignore"):
        rec = np.where(np.isnan(d), 0.0, np.exp(-np.maximum(np.nan_to_num(d, nan=np.inf), 0.0)
                                               / _RECENCY_SCALE_DAYS))
        act = -np.expm1(-clean(e) / _ACTIVITY_SCALE)
        freq = -np.expm1(-clean(n) / _FREQUENCY_SCALE)
        mon = -np.expm1(-clean(s) / _MONETARY_SCALE)
    w = ENGAGEMENT_WEIGHTS
    score = 100.0 * (w["recency"] * rec + w["activity"] * act + w["frequency"] * freq
                     + w["monetary"] * mon)
    return np.clip(score, 0.0, 100.0)
