"""frequency_recency: day collapsing, as_of cutoff, RFM facts, on hand-built logs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from shared.analytics.stats import frequency_recency


def ts(*stamps, unit="ms"):
    return np.array(stamps, dtype=f"datetime64[{unit}]")


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_same_day_purchases_collapse_and_cutoff(unit):
    users = np.array([7, 7, 7, 7, 7, 3, 3, 9], dtype=np.int64)
    times = ts(
        "2024-01-01T09:00", "2024-01-01T23:59:59.999",   # user 7, day 0, two purchases
        "2024-01-08T12:00",                               # day 7
        "2024-01-15T00:00", "2024-01-15T18:30",           # day 14 (= as_of), two purchases
        "2024-01-10T10:00", "2024-01-16T00:00",           # user 3: second one is after as_of
        "2024-01-16T00:00:00.001",                        # user 9: only purchase after as_of
        unit=unit,
    )
    amounts = np.array([10.0, 5.0, 20.0, 30.0, 12.0, 40.0, 1000.0, 99.0])
    s = frequency_recency(users, times, amounts, dt.date(2024, 1, 15))

    np.testing.assert_array_equal(s.user_id, [3, 7])      # user 9 is not a customer yet
    np.testing.assert_array_equal(s.frequency, [0, 2])    # 3 distinct days for user 7
    np.testing.assert_allclose(s.recency, [0.0, 2.0])     # 14 days = 2 weeks
    np.testing.assert_allclose(s.T, [5 / 7, 2.0])
    # repeat days of user 7: 20 and 30+12 -> mean 31; first day (10+5) excluded
    np.testing.assert_allclose(s.monetary_value, [0.0, 31.0])
    np.testing.assert_allclose(s.total_spent, [40.0, 77.0])
    np.testing.assert_array_equal(s.n_purchases, [1, 5])
    np.testing.assert_array_equal(s.days_since_last_purchase, [5, 0])
    assert s.first_purchase[1] == np.datetime64("2024-01-01T09:00", unit)
    assert s.last_purchase[1] == np.datetime64("2024-01-15T18:30", unit)
    assert s.first_purchase.dtype == np.dtype(f"datetime64[{unit}]")
    assert len(s) == 2


def test_as_of_earlier_drops_later_purchases_and_order_does_not_matter():
    rng = np.random.default_rng(0)
    users = np.array([1, 1, 1, 2, 2])
    times = ts("2024-03-01T10:00", "2024-03-05T10:00", "2024-03-20T10:00",
               "2024-03-05T01:00", "2024-03-05T02:00")
    amounts = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    perm = rng.permutation(5)
    s = frequency_recency(users[perm], times[perm], amounts[perm], dt.date(2024, 3, 5))
    np.testing.assert_array_equal(s.user_id, [1, 2])
    np.testing.assert_array_equal(s.frequency, [1, 0])
    np.testing.assert_allclose(s.recency, [4 / 7, 0.0])
    np.testing.assert_allclose(s.T, [4 / 7, 0.0])       # first purchase on as_of -> T = 0
    np.testing.assert_allclose(s.monetary_value, [2.0, 0.0])
    np.testing.assert_allclose(s.total_spent, [3.0, 24.0])
    np.testing.assert_array_equal(s.n_purchases, [2, 2])
    np.testing.assert_array_equal(s.days_since_last_purchase, [0, 0])


def test_empty_and_all_future_logs():
    empty = frequency_recency(np.array([], np.int64), np.array([], "datetime64[ms]"),
                                np.array([]), dt.date(2024, 1, 1))
    assert len(empty) == 0 and empty.frequency.dtype == np.int64
    future = frequency_recency(np.array([1]), ts("2024-01-02T00:00"), np.array([5.0]),
                                 dt.date(2024, 1, 1))
    assert len(future) == 0


def test_many_customers_matches_naive_definition():
    rng = np.random.default_rng(3)
    n = 5000
    users = rng.integers(0, 400, n)
    times = (np.datetime64("2024-01-01T00:00", "ms")
             + rng.integers(0, 120 * 86_400_000, n).astype("timedelta64[ms]"))
    amounts = rng.gamma(2.0, 10.0, n).round(2)
    as_of = dt.date(2024, 3, 31)
    s = frequency_recency(users, times, amounts, as_of)
    cut = np.datetime64(as_of, "D")
    for i, u in enumerate(s.user_id[:50]):          # reference: slow, per-user definition
        sel = (users == u) & (times.astype("datetime64[D]") <= cut)
        days = times[sel].astype("datetime64[D]")
        ud = np.unique(days)
        per_day = np.array([amounts[sel][days == d].sum() for d in ud])
        assert s.frequency[i] == ud.size - 1
        assert s.recency[i] == pytest.approx((ud[-1] - ud[0]).astype(int) / 7)
        assert s.T[i] == pytest.approx((cut - ud[0]).astype(int) / 7)
        assert s.monetary_value[i] == pytest.approx(per_day[1:].mean() if ud.size > 1 else 0.0)
        assert s.total_spent[i] == pytest.approx(amounts[sel].sum())
        assert s.days_since_last_purchase[i] == (cut - ud[-1]).astype(int)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError):
        frequency_recency(np.array([1, 2]), ts("2024-01-01T00:00"), np.array([1.0]),
                            dt.date(2024, 1, 1))
    with pytest.raises(TypeError):
        frequency_recency(np.array([1]), np.array([1.0]), np.array([1.0]), dt.date(2024, 1, 1))
    with pytest.raises(ValueError):
        frequency_recency(np.array([1]), ts("2024-01-01T00:00"), np.array([np.nan]),
                            dt.date(2024, 1, 1))
