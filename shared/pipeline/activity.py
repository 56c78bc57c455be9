"""Per-user daily activity counters (Postgres `activity_days`), derived from MongoDB `events`.

The worker adds every batch it stores, exactly once, in the transaction of shared.pipeline.summaries
(`record`); profiles read a few rows per user (`load`); `pulse summaries rebuild`
recounts them from the events, which are the source of truth.

Why Postgres and not a MongoDB collection: the counters are one upsert per (user, day) touched,
so per stored batch of 1,000 events there are up to several hundred of them. In one statement
against Postgres that costs a few milliseconds; as MongoDB upserts it cost more than half as much
as storing the events themselves on the dev server, whose single process bounds ingestion.
"""
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.contracts.event_time import to_milliseconds

# Rows sorted by (user, day), so two workers upserting overlapping batches lock in one order and
# cannot deadlock; only users that exist are counted (an event of a deleted user is not an error).
_UPSERT = text(
    """
    INSERT INTO activity_days (user_id, day, events, last_event_at)
    SELECT v.user_id, v.day, v.events, v.last_event_at
    FROM unnest(CAST(:user_ids AS integer[]), CAST(:days AS date[]), CAST(:counts AS integer[]),
                CAST(:lasts AS timestamptz[])) AS v(user_id, day, events, last_event_at)
    JOIN users ON users.id = v.user_id
    ORDER BY v.user_id, v.day
    ON CONFLICT (user_id, day) DO UPDATE
    SET events = activity_days.events + EXCLUDED.events,
        last_event_at = GREATEST(activity_days.last_event_at, EXCLUDED.last_event_at)
    """
)

_LOAD = text(
    """
    SELECT user_id, sum(events) AS events, coalesce(sum(events) FILTER (WHERE day >= :since), 0) AS recent,
           max(last_event_at) AS last_event_at
    FROM activity_days
    WHERE user_id = ANY(CAST(:user_ids AS integer[]))
    GROUP BY user_id
    """
)


@dataclass(frozen=True)
class Activity:
    events: int
    events_last_30_days: int
    last_activity_at: datetime | None


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def record(session: Session, docs: Iterable[dict[str, Any]]) -> int:
    """Add stored event documents (`user_id`, `timestamp`) to the counters. One statement.
    Returns the number of (user, day) buckets touched."""
    buckets: dict[tuple[int, date], list[Any]] = {}
    for doc in docs:
        stamp = to_milliseconds(doc["timestamp"])
        bucket = buckets.setdefault((int(doc["user_id"]), _day(stamp)), [0, stamp])
        bucket[0] += 1
        bucket[1] = max(bucket[1], stamp)
    _upsert(session, buckets)
    return len(buckets)


def _upsert(session: Session, buckets: dict[tuple[int, date], list[Any]]) -> None:
    if not buckets:
        return
    keys = sorted(buckets)
    session.execute(
        _UPSERT,
        {
            "user_ids": [u for u, _ in keys],
            "days": [d for _, d in keys],
            "counts": [buckets[k][0] for k in keys],
            "lasts": [buckets[k][1] for k in keys],
        },
    )


def load(session: Session, user_ids: list[int], now: datetime) -> dict[int, Activity]:
    """Event counts and last activity per user. "Last 30 days" counts whole UTC days."""
    if not user_ids:
        return {}
    since = _day(now) - timedelta(days=30)
    rows = session.execute(_LOAD, {"user_ids": [int(u) for u in user_ids], "since": since})
    return {row.user_id: Activity(int(row.events), int(row.recent), row.last_event_at) for row in rows}
