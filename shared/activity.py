"""Per-user daily activity counters: cheap to write on the ingestion path, cheap to read.

The worker appends one small *delta* document per (user, day) of each stored batch — an insert,
several times cheaper than an upsert — and the analytics worker *folds* the deltas of the users
it rescored into one *bucket* per (user, day). Readers add buckets and the deltas not yet folded.

Folding is exact and needs no transaction. The bucket update is one atomic single-document write
that adds the deltas' counts and records their ids in `folded`; a reader skips a delta whose id
its bucket lists, so each delta counts once whether the reader runs before the bucket update,
between it and the deltas' deletion, or after. A retried fold finds the ids already recorded and
changes nothing. After the deltas are deleted, their ids are pulled from `folded`.

Deltas are counted from the documents a delivery inserted, so a redelivered batch adds nothing;
a crash between the event insert and the delta insert leaves that batch uncounted (the events
themselves are stored). Counts feed engagement and the profile's totals; they are not a ledger.
"""
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import ASCENDING, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

DELTAS = "activity_deltas"
BUCKETS = "activity_daily"
DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class Activity:
    events: int
    events_last_30_days: int
    last_activity_at: datetime | None


def ensure_indexes(db: Database) -> None:
    db[DELTAS].create_index([("user_id", ASCENDING), ("day", ASCENDING)], name="ix_user_day")
    db[BUCKETS].create_index([("user_id", ASCENDING), ("day", ASCENDING)], unique=True, name="uq_user_day")


def record(db: Database, events: list[dict]) -> None:
    """Append the deltas of newly stored events (each with user_id and a UTC timestamp)."""
    deltas: dict[tuple[int, datetime], dict] = {}
    for event in events:
        day = event["timestamp"].replace(hour=0, minute=0, second=0, microsecond=0)
        delta = deltas.setdefault(
            (event["user_id"], day), {"user_id": event["user_id"], "day": day, "events": 0, "last": event["timestamp"]}
        )
        delta["events"] += 1
        delta["last"] = max(delta["last"], event["timestamp"])
    if deltas:
        db[DELTAS].insert_many(list(deltas.values()), ordered=False)


def load(db: Database, user_ids: list[int], now: datetime) -> dict[int, Activity]:
    """Totals, the last 30 whole UTC days, and the last activity of each user."""
    ids = [int(u) for u in user_ids]
    since = (now - timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0)
    buckets = list(db[BUCKETS].find({"user_id": {"$in": ids}}, {"_id": 0}))
    folded = {(b["user_id"], b["day"]): set(b.get("folded", ())) for b in buckets}
    rows = buckets + [
        d for d in db[DELTAS].find({"user_id": {"$in": ids}})
        if d["_id"] not in folded.get((d["user_id"], d["day"]), ())
    ]
    totals: dict[int, list] = defaultdict(lambda: [0, 0, None])
    for row in rows:
        total = totals[row["user_id"]]
        total[0] += row["events"]
        if row["day"] >= since:
            total[1] += row["events"]
        if row.get("last") and (total[2] is None or row["last"] > total[2]):
            total[2] = row["last"]
    return {user_id: Activity(*values) for user_id, values in totals.items()}


def fold(db: Database, user_ids: list[int]) -> int:
    """Fold the users' deltas into their buckets. Safe to run concurrently with writers, readers
    and another fold of the same users, and to retry after a crash at any step."""
    deltas = list(db[DELTAS].find({"user_id": {"$in": [int(u) for u in user_ids]}}))
    if not deltas:
        return 0
    groups: dict[tuple[int, datetime], list[dict]] = defaultdict(list)
    for delta in deltas:
        groups[(delta["user_id"], delta["day"])].append(delta)
    updates = []
    for (user_id, day), group in groups.items():
        ids = [d["_id"] for d in group]
        updates.append(
            UpdateOne(
                # Matches only while none of these deltas is recorded: a retry cannot add twice.
                {"user_id": user_id, "day": day, "folded": {"$nin": ids}},
                {
                    "$inc": {"events": sum(d["events"] for d in group)},
                    "$max": {"last": max(d["last"] for d in group)},
                    "$push": {"folded": {"$each": ids}},
                },
                upsert=True,
            )
        )
    try:
        db[BUCKETS].bulk_write(updates, ordered=False)
    except BulkWriteError as exc:
        # An upsert that found the bucket with these ids already recorded collides with the
        # unique (user_id, day) index: that group was folded by an earlier try. Anything else is real.
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
    # Delete only deltas a bucket has recorded: a concurrent fold may have recorded a different
    # set for the same bucket, and then our group's update matched nothing.
    users = list({user_id for user_id, _ in groups})
    recorded = {
        delta_id
        for bucket in db[BUCKETS].find({"user_id": {"$in": users}}, {"folded": 1})
        for delta_id in bucket.get("folded", ())
    }
    done = [d["_id"] for d in deltas if d["_id"] in recorded]
    if done:
        db[DELTAS].delete_many({"_id": {"$in": done}})
        db[BUCKETS].update_many({"user_id": {"$in": users}}, {"$pull": {"folded": {"$in": done}}})
    return len(done)
