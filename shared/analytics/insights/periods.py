"""Calendar periods of the insight queries: UTC days, weeks starting on Monday, months starting on the 1st.

Python computes the period bounds a query asks for (so a query's range is exact whatever the
session's time zone); SQL buckets events with `date_trunc(<unit>, at AT TIME ZONE 'UTC')`, which
starts weeks on Monday (ISO) and months on the 1st, the same periods.
"""
from __future__ import annotations

from datetime import date, timedelta

DAY, WEEK, MONTH = "day", "week", "month"
PERIODS = (DAY, WEEK, MONTH)
# The most periods one query may cover (a matrix or a chart larger than this is not read by anyone,
# and its cost grows with it): about 13 months of days, two years of weeks, three years of months.
MAX_PERIODS = {DAY: 400, WEEK: 104, MONTH: 36}


def floor(day: date, period: str) -> date:
    """The start of the period holding `day`."""
    if period == WEEK:
        return day - timedelta(days=day.weekday())
    if period == MONTH:
        return day.replace(day=1)
    return day


def add(start: date, period: str, n: int) -> date:
    """`n` periods after the period start `start`."""
    if period == WEEK:
        return start + timedelta(weeks=n)
    if period == MONTH:
        months = start.year * 12 + start.month - 1 + n
        return date(months // 12, months % 12 + 1, 1)
    return start + timedelta(days=n)


def ceil(day: date, period: str) -> date:
    """The first period start on or after `day`."""
    start = floor(day, period)
    return start if start == day else add(start, period, 1)


def between(first: date, last: date, period: str) -> int:
    """Periods from the period start `first` to the period start `last` (0 when equal)."""
    if period == MONTH:
        return (last.year * 12 + last.month) - (first.year * 12 + first.month)
    days = (last - first).days
    return days // 7 if period == WEEK else days


def starts(first: date, end: date, period: str) -> list[date]:
    """Period starts from the period holding `first` while before `end`."""
    out, current = [], floor(first, period)
    while current < end:
        out.append(current)
        current = add(current, period, 1)
    return out


def interval(period: str) -> str:
    """A Postgres interval literal of one period."""
    return f"1 {period}"


def bucket_sql(at: str, period: str) -> str:
    """SQL: the UTC period start (a date) of the timestamptz expression `at`."""
    # The one word spliced into SQL from a query: only ever one of the three units.
    if period not in (DAY, WEEK, MONTH):
        raise ValueError(f"unknown period {period!r}")
    return f"CAST(date_trunc('{period}', {at} AT TIME ZONE 'UTC') AS date)"


def index_sql(at: str, cohort: str, period: str) -> str:
    """SQL: how many periods after the period start `cohort` (a date) the timestamptz `at` falls."""
    bucket = bucket_sql(at, period)
    if period == MONTH:
        return (f"((extract(year FROM {bucket}) * 12 + extract(month FROM {bucket}))"
                f" - (extract(year FROM {cohort}) * 12 + extract(month FROM {cohort})))::int")
    if period == WEEK:
        return f"(({bucket} - {cohort}) / 7)"
    return f"({bucket} - {cohort})"


def utc_sql(day: str) -> str:
    """SQL: the timestamptz of UTC midnight of the date expression `day`."""
    return f"(CAST({day} AS timestamp) AT TIME ZONE 'UTC')"
