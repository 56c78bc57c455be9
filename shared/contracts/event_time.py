"""The event time contract: what an instant and a day are once stored.

MongoDB keeps an instant to the millisecond, so every instant that is compared with a stored one
(an event's identity, a summary's first and last purchase, a profile's `computed_at`) is cut to
milliseconds first, or a value read back would differ from the value written. A day is counted
from EPOCH (the frequency/recency arrays and the SQL that fills them).
"""
from datetime import date, datetime

EPOCH = date(1970, 1, 1)


def to_milliseconds(moment: datetime) -> datetime:
    """The instant as MongoDB stores it: microseconds cut (not rounded) to milliseconds."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
