"""Sessions: runs of one person's events with gaps shorter than SESSION_IDLE_MINUTES.

A gap of exactly the idle time ends a session (PostHog's, Segment's and Snowplow's 30 minutes: a
session lasts while the next event comes *within* the idle time). A session's length is its last
event's instant minus its first's, so a session of one event lasts 0 minutes.

The window edge: sessions are formed from the window's events only (the events the profile's
`totals.events_last_30_days` counts: stamped on or after the start of the UTC day 30 days ago,
including the few stamped ahead of now). A session that began before the window counts from its
first event inside it. So the session figures and `events_last_30_days` always describe the same
events, and the cost of a profile's sessions is that person's events of the window, read through
MongoDB's `ix_user_time` `(user_id, timestamp)`: never the population's, never the person's
older history.

Every event counts, `user_created` included: the signup is something the person did on the
site, at the moment they did it, and the session it falls in (the visits before it, the first
steps after it) is the one a product wants to see.

Exact whatever order events arrived in: the figures are computed from the stored events sorted
by instant, never kept incrementally.
"""
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from pymongo.cursor import Cursor
from pymongo.database import Database
from pymongo.errors import OperationFailure

from shared.infra.logging import get_logger
from shared.infra.mongo import EVENTS, Document

log = get_logger(__name__)

WINDOW_DAYS = 30


@dataclass(frozen=True)
class Sessions:
    count: int
    average_minutes: float | None  # None without a session

    def as_profile(self) -> dict[str, int | float | None]:
        return {"last_30_days": self.count,
                "average_minutes_30d": None if self.average_minutes is None else round(self.average_minutes, 2)}


NO_SESSIONS = Sessions(0, None)


def sessions_of(user_ids: npt.NDArray[np.int64], seconds: npt.NDArray[np.float64],
                idle_seconds: float) -> dict[int, Sessions]:
    """Each person's sessions from their events' (user id, instant in seconds) pairs, in any order.
    A person without events is absent from the answer (their sessions are NO_SESSIONS)."""
    if idle_seconds <= 0:
        raise ValueError("idle_seconds must be positive")
    users = np.asarray(user_ids, dtype=np.int64)
    instants = np.asarray(seconds, dtype=np.float64)
    if users.shape != instants.shape:
        raise ValueError("one instant per user id")
    if users.size == 0:
        return {}
    order = np.lexsort((instants, users))  # by user, then by instant
    users, instants = users[order], instants[order]
    # A session starts at the first event, at every person's first event, and after a gap of at
    # least the idle time.
    starts = np.ones(users.size, dtype=bool)
    starts[1:] = (users[1:] != users[:-1]) | (np.diff(instants) >= idle_seconds)
    first = np.flatnonzero(starts)
    last = np.append(first[1:], users.size) - 1
    minutes = (instants[last] - instants[first]) / 60.0
    session_users = users[first]
    people, where, counts = np.unique(session_users, return_index=True, return_counts=True)
    totals = np.add.reduceat(minutes, where)
    return {int(person): Sessions(int(count), float(total) / int(count))
            for person, count, total in zip(people, counts, totals, strict=True)}


def window_start(now: datetime) -> datetime:
    """The first instant of the window: the start of the UTC day 30 days ago, as the activity
    counters' `events_last_30_days` (shared.pipeline.activity)."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=WINDOW_DAYS)


def window_events(db: Database[Document], user_ids: list[int], now: datetime,
                  hinted: bool = True) -> Cursor[Document]:
    """The users' events of the window, (user id, instant) only: one range of `ix_user_time`
    per user. Hinted: a planner that sees a small collection may prefer a scan, and a profile's
    cost must not depend on the planner's guess about everyone else's events."""
    cursor = db[EVENTS].find(
        {"user_id": {"$in": [int(u) for u in user_ids]}, "timestamp": {"$gte": window_start(now)}},
        {"_id": 0, "user_id": 1, "timestamp": 1},
    )
    return cursor.hint("ix_user_time") if hinted else cursor


def load(db: Database[Document], user_ids: list[int], now: datetime, idle_minutes: float) -> dict[int, Sessions]:
    """The sessions of the window of each given user (every one of them in the answer)."""
    if not user_ids:
        return {}
    people: list[int] = []
    instants: list[float] = []
    try:
        documents = list(window_events(db, user_ids, now))
    except OperationFailure as exc:
        # The index is made when a worker first starts (shared.infra.mongo.prepare_database); an
        # API answering before that, against a store without it, reads unhinted rather than fail.
        log.warning("sessions_index_missing", error=str(exc))
        documents = list(window_events(db, user_ids, now, hinted=False))
    for doc in documents:
        people.append(int(doc["user_id"]))
        instants.append(doc["timestamp"].timestamp())  # the client is tz-aware: UTC instants
    found = sessions_of(np.array(people, dtype=np.int64), np.array(instants, dtype=np.float64), idle_minutes * 60.0)
    return {int(u): found.get(int(u), NO_SESSIONS) for u in user_ids}
