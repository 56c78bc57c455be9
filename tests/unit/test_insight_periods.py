"""The calendar of the insight queries: UTC days, Monday weeks, months on the 1st."""
from datetime import date

import pytest

from shared.analytics.insights import periods
from shared.analytics.insights.retention import RetentionQuery, resolved


@pytest.mark.parametrize("day,period,start", [
    (date(2025, 1, 6), "week", date(2025, 1, 6)),  # a Monday is its own week
    (date(2025, 1, 12), "week", date(2025, 1, 6)),  # Sunday belongs to the week before
    (date(2025, 1, 1), "week", date(2024, 12, 30)),  # across a year
    (date(2024, 2, 29), "month", date(2024, 2, 1)),
    (date(2024, 2, 29), "day", date(2024, 2, 29)),
])
def test_floor(day, period, start):
    assert periods.floor(day, period) == start


def test_add_between_and_ceil():
    assert periods.add(date(2024, 11, 1), "month", 3) == date(2025, 2, 1)
    assert periods.add(date(2025, 1, 1), "month", -1) == date(2024, 12, 1)
    assert periods.add(date(2025, 1, 6), "week", -2) == date(2024, 12, 23)
    assert periods.between(date(2024, 11, 1), date(2025, 2, 1), "month") == 3
    assert periods.between(date(2024, 12, 23), date(2025, 1, 6), "week") == 2
    assert periods.between(date(2025, 1, 6), date(2025, 1, 6), "day") == 0
    assert periods.ceil(date(2025, 1, 7), "week") == date(2025, 1, 13)
    assert periods.ceil(date(2025, 1, 6), "week") == date(2025, 1, 6)
    assert periods.ceil(date(2025, 1, 2), "month") == date(2025, 2, 1)


def test_starts_hold_the_first_day_and_stop_before_the_end():
    assert periods.starts(date(2025, 1, 8), date(2025, 1, 20), "week") == [
        date(2025, 1, 6), date(2025, 1, 13)]
    assert periods.starts(date(2025, 1, 15), date(2025, 3, 1), "month") == [date(2025, 1, 1), date(2025, 2, 1)]
    assert periods.starts(date(2025, 1, 1), date(2025, 1, 1), "day") == []


def test_retention_defaults_to_the_periods_up_to_today():
    query = resolved(RetentionQuery("signup", "week", 4), today=date(2025, 1, 15))
    assert (query.start, query.end) == (date(2024, 12, 23), date(2025, 1, 16))
    monthly = resolved(RetentionQuery("signup", "month", 3, start=date(2024, 5, 5)), today=date(2025, 1, 15))
    assert (monthly.start, monthly.end) == (date(2024, 5, 5), date(2025, 1, 16))


def test_sql_buckets_are_utc():
    assert periods.bucket_sql("e.at", "week") == "CAST(date_trunc('week', e.at AT TIME ZONE 'UTC') AS date)"
    assert "12" in periods.index_sql("e.at", "m.cohort", "month")
