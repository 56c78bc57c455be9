"""Per-customer frequency, recency, age and value of a transaction log, in the BG/NBD conventions.

The probability models (BG/NBD, Gamma-Gamma) do not look at raw transactions but at the
sufficient statistics ``(x, t_x, T, m)`` of each customer.  This module turns a flat purchase
log into those statistics with the conventions of ``lifetimes.utils.
summary_data_from_transaction_data(..., observation_period_end=as_of, freq="D")`` followed by a
conversion of days to weeks (the unit used by Fader, Hardie & Lee 2005 and by the CDNOW sample):

* Timestamps are UTC instants (naive ``datetime64`` read as UTC).  Each purchase is collapsed to
  its UTC calendar day; several purchases on the same day are ONE purchase occasion whose value
  is the day's total.
* ``as_of`` is a calendar day and is INCLUDED: every purchase made on that day (up to 23:59:59.999
  UTC) counts, purchases on later days are dropped.  Time is measured in whole days, exactly as
  lifetimes does with ``freq="D"``: the observation period ends at the day ``as_of`` itself, so
  ``T = (as_of - first purchase day)`` in days / 7.  A customer whose first purchase is on
  ``as_of`` has ``T = 0`` (and ``x = t_x = 0``), which contributes exactly 0 to the BG/NBD
  log-likelihood.
* ``frequency`` (the papers' ``x``) = number of distinct purchase days - 1 (repeat purchases).
* ``recency`` (``t_x``) = (last purchase day - first purchase day) / 7 weeks.
* ``monetary_value`` (``m``, the papers' ``z-bar``) = mean of the per-day totals of the REPEAT
  purchase days (the first day is excluded, as in Fader & Hardie 2013 and lifetimes); 0 when
  ``frequency == 0``.
* A customer is a user with at least one purchase on or before ``as_of``; users without purchases
  simply do not appear in the summary.

Everything is vectorised: one ``np.lexsort`` of the log, then ``np.add.reduceat`` /
``np.bincount`` over the group boundaries; there is no Python loop per customer.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

__all__ = ["FrequencyRecency", "frequency_recency", "DAYS_PER_WEEK"]

DAYS_PER_WEEK = 7.0


@dataclass(frozen=True)
class FrequencyRecency:
    """Aligned per-customer arrays (one entry per customer, sorted by ``user_id``).

    Attributes
    ----------
    user_id : int64
    frequency : int64, repeat purchase days (``x``)
    recency : float64, weeks from first to last purchase day (``t_x``)
    T : float64, weeks from first purchase day to ``as_of`` (customer age)
    monetary_value : float64, mean per-day total over repeat purchase days (0 if ``x == 0``)
    total_spent : float64, sum of all amounts up to and including ``as_of``
    n_purchases : int64, number of purchase records (not collapsed by day)
    first_purchase, last_purchase : datetime64 (the input unit), first/last purchase instants
    days_since_last_purchase : int64, ``as_of - last purchase day`` in whole days (>= 0)
    """

    user_id: np.ndarray
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary_value: np.ndarray
    total_spent: np.ndarray
    n_purchases: np.ndarray
    first_purchase: np.ndarray
    last_purchase: np.ndarray
    days_since_last_purchase: np.ndarray

    def __len__(self) -> int:
        return int(self.user_id.shape[0])


def _as_day(as_of: _dt.date | np.datetime64 | str) -> np.datetime64:
    if isinstance(as_of, _dt.datetime):
        # A datetime is reduced to its (UTC) calendar day: the cutoff is a day, not an instant.
        if as_of.tzinfo is not None:
            as_of = as_of.astimezone(_dt.UTC).replace(tzinfo=None)
        return np.datetime64(as_of.date(), "D")
    if isinstance(as_of, _dt.date):
        return np.datetime64(as_of, "D")
    if isinstance(as_of, np.datetime64):
        # The same conversion as np.datetime64(as_of, "D"), which numpy's stubs do not offer for a datetime64.
        day: np.datetime64 = as_of.astype("datetime64[D]")
        return day
    return np.datetime64(as_of, "D")


def frequency_recency(
    user_ids: np.ndarray,
    timestamps: np.ndarray,
    amounts: np.ndarray,
    as_of: _dt.date,
) -> FrequencyRecency:
    """Summarise a purchase log into per-customer ``(x, t_x, T, m)`` and RFM facts.

    Parameters
    ----------
    user_ids : 1-D int array
    timestamps : 1-D ``datetime64`` array (any unit, e.g. ``[ms]`` or ``[us]``), UTC
    amounts : 1-D float array, purchase values
    as_of : ``datetime.date`` -- last observed day, inclusive (see the module docstring)

    Returns
    -------
    FrequencyRecency, sorted by ``user_id``.
    """
    uid = np.asarray(user_ids).astype(np.int64, copy=False).ravel()
    ts = np.asarray(timestamps).ravel()
    amt = np.asarray(amounts, dtype=np.float64).ravel()
    if not (uid.shape == ts.shape == amt.shape):
        raise ValueError("user_ids, timestamps and amounts must have the same length")
    if ts.size and not np.issubdtype(ts.dtype, np.datetime64):
        raise TypeError("timestamps must be a numpy datetime64 array")
    if not np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[ms]")
    if np.isnat(ts).any():
        raise ValueError("timestamps contain NaT")
    if not np.all(np.isfinite(amt)):
        raise ValueError("amounts must be finite")

    cutoff_day = _as_day(as_of)
    day = ts.astype("datetime64[D]")
    keep = day <= cutoff_day
    if not keep.all():
        uid, ts, amt, day = uid[keep], ts[keep], amt[keep], day[keep]

    if uid.size == 0:
        e_i = np.zeros(0, np.int64)
        e_f = np.zeros(0, np.float64)
        e_t = np.zeros(0, ts.dtype)
        return FrequencyRecency(e_i, e_i.copy(), e_f, e_f.copy(), e_f.copy(), e_f.copy(),
                               e_i.copy(), e_t, e_t.copy(), e_i.copy())

    # Sort by (user, instant): within a user, days are then non-decreasing too.
    order = np.lexsort((ts.view(np.int64), uid))
    uid, ts, amt, day = uid[order], ts[order], amt[order], day[order]
    day_i = day.view(np.int64)

    n = uid.size
    new_user = np.empty(n, dtype=bool)
    new_user[0] = True
    np.not_equal(uid[1:], uid[:-1], out=new_user[1:])
    new_day = new_user.copy()
    new_day[1:] |= day_i[1:] != day_i[:-1]

    user_start = np.flatnonzero(new_user)
    user_end = np.append(user_start[1:], n) - 1
    day_start = np.flatnonzero(new_day)

    customer = np.cumsum(new_user) - 1            # customer index of each record
    n_cust = user_start.size

    n_days = np.add.reduceat(new_day.astype(np.int64), user_start)
    frequency = n_days - 1
    total_spent = np.add.reduceat(amt, user_start)
    n_purchases = np.diff(np.append(user_start, n)).astype(np.int64)

    first_day = day_i[user_start]
    last_day = day_i[user_end]
    recency = (last_day - first_day).astype(np.float64) / DAYS_PER_WEEK
    cutoff_i = np.int64(cutoff_day.view(np.int64))
    T = (cutoff_i - first_day).astype(np.float64) / DAYS_PER_WEEK

    # Monetary value: per-day totals, drop each customer's first day, average the rest.
    day_totals = np.add.reduceat(amt, day_start)
    day_customer = customer[day_start]
    is_repeat_day = ~new_user[day_start]
    repeat_sum = np.bincount(day_customer[is_repeat_day], weights=day_totals[is_repeat_day],
                             minlength=n_cust)
    monetary = np.zeros(n_cust, dtype=np.float64)
    has_repeat = frequency > 0
    monetary[has_repeat] = repeat_sum[has_repeat] / frequency[has_repeat]

    return FrequencyRecency(
        user_id=uid[user_start].copy(),
        frequency=frequency.astype(np.int64),
        recency=recency,
        T=T,
        monetary_value=monetary,
        total_spent=total_spent,
        n_purchases=n_purchases,
        first_purchase=ts[user_start].copy(),
        last_purchase=ts[user_end].copy(),
        days_since_last_purchase=(cutoff_i - last_day).astype(np.int64),
    )
