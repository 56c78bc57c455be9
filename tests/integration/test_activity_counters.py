"""Activity counters: deltas on write, folded into daily buckets, each delta counted once."""
from datetime import UTC, datetime, timedelta

import pytest

from shared import activity
from shared.mongo import ensure_indexes

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def event(user_id: int, days_ago: float) -> dict:
    return {"user_id": user_id, "timestamp": NOW - timedelta(days=days_ago)}


@pytest.fixture()
def db(mongo):
    ensure_indexes(mongo)  # as every worker does at start: the fold relies on the unique bucket key
    for name in (activity.DELTAS, activity.BUCKETS):
        mongo[name].delete_many({"user_id": {"$gte": 900_000}})
    return mongo


def snapshot(db, users):
    return {u: (a.events, a.events_last_30_days, a.last_activity_at) for u, a in activity.load(db, users, NOW).items()}


def test_counts_survive_folding_exactly(db):
    users = [900_001, 900_002]
    activity.record(db, [event(900_001, 0.1), event(900_001, 0.2), event(900_001, 40), event(900_002, 1)])
    activity.record(db, [event(900_001, 0.05)])
    before = snapshot(db, users)
    assert before[900_001][:2] == (4, 3)
    assert before[900_001][2] == NOW - timedelta(days=0.05)
    assert before[900_002][:2] == (1, 1)

    assert activity.fold(db, users) == 4
    assert snapshot(db, users) == before
    assert db[activity.DELTAS].count_documents({"user_id": {"$in": users}}) == 0
    assert activity.fold(db, users) == 0  # nothing left: a second fold changes nothing
    assert snapshot(db, users) == before

    activity.record(db, [event(900_001, 0.01)])
    assert snapshot(db, users)[900_001][0] == 5
    activity.fold(db, users)
    assert snapshot(db, users)[900_001][0] == 5


def test_a_fold_interrupted_after_the_bucket_update_is_exact_then_and_on_retry(db):
    users = [900_010]
    activity.record(db, [event(900_010, 0.1), event(900_010, 0.2)])
    before = snapshot(db, users)
    # Do the bucket update of a fold by hand, then "crash" before deleting the deltas.
    deltas = list(db[activity.DELTAS].find({"user_id": 900_010}))
    ids = [d["_id"] for d in deltas]
    db[activity.BUCKETS].update_one(
        {"user_id": 900_010, "day": deltas[0]["day"], "folded": {"$nin": ids}},
        {"$inc": {"events": 2}, "$max": {"last": max(d["last"] for d in deltas)}, "$push": {"folded": {"$each": ids}}},
        upsert=True,
    )
    assert snapshot(db, users) == before  # recorded deltas are skipped, not counted twice
    activity.fold(db, users)  # the retry
    assert snapshot(db, users) == before
    assert db[activity.BUCKETS].find_one({"user_id": 900_010})["folded"] == []
