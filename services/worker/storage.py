"""Storing a batch of events: MongoDB `events`, then the Postgres summaries, exactly once.

The one storage path of the product: the event-batch task, the signup task and the historical
backfill all call `store_batch`, so counters and summaries are right whichever way events came.
"""
import time
from collections.abc import Callable
from dataclasses import dataclass

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from shared import counters, erasure, profile_cache, rescore, summaries
from shared.db import session_scope
from shared.mongo import EVENTS

DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class Stored:
    received: int
    inserted: int  # documents this call inserted
    applied: bool  # False when the batch had been added to the summaries before
    users: int
    gone: list[int]  # users erased while the batch was stored: what it wrote for them is deleted again
    mongo_ms: float
    postgres_ms: float


def insert_events(collection: Collection, docs: list[dict], batch_id: str) -> tuple[list[dict], list[dict]]:
    """Unordered bulk insert of documents stamped with `batch_id`; a duplicate `event_id` means
    that event is stored already. Returns (the documents this call inserted, the documents the
    batch owns): what it inserted plus the duplicates an earlier delivery of the same batch
    stored, as their stored `batch_id` tells."""
    if not docs:
        return [], []
    for doc in docs:
        doc["batch_id"] = batch_id
    try:
        collection.insert_many(docs, ordered=False)
        return docs, docs
    except BulkWriteError as exc:
        details = exc.details
        fatal = [e for e in details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if fatal or details.get("writeConcernErrors"):
            raise
        duplicates = {e["index"] for e in details.get("writeErrors", [])}
    inserted = [doc for i, doc in enumerate(docs) if i not in duplicates]
    duplicate_ids = [docs[i]["event_id"] for i in duplicates]
    ours = {
        stored["event_id"]
        for stored in collection.find({"event_id": {"$in": duplicate_ids}}, {"_id": 0, "event_id": 1, "batch_id": 1})
        if stored.get("batch_id") == batch_id
    }
    owned = [doc for i, doc in enumerate(docs) if i not in duplicates or doc["event_id"] in ours]
    return inserted, owned


def store_batch(db, batch_id: str, docs: list[dict], schedule_rescore: Callable[[float], None]) -> Stored:
    """Store event documents (`event_id`, `user_id`, `event_type`, `timestamp` as a datetime, ...)
    as one batch. Safe to repeat with the same `batch_id` and documents: nothing is stored or
    counted twice, and what a killed attempt left half-done is completed."""
    user_ids = sorted({int(doc["user_id"]) for doc in docs})
    gone: list[int] = []
    started = time.perf_counter()
    inserted, owned = insert_events(db[EVENTS], docs, batch_id)
    stored = time.perf_counter()
    with session_scope() as session:
        applied = summaries.record_batch(session, batch_id, owned)
        # Profiles are computed from the summaries: new cache versions in the same transaction,
        # so no profile cached before it commits is served after (shared.profile_cache). Every
        # user of the batch, also on a redelivery (harmless: one more miss).
        profile_cache.bump(session, user_ids)
        # After the insert: an erasure that committed before this read is undone below, one
        # that commits after it deletes these events itself (shared.erasure).
        gone = erasure.missing_users(session, user_ids)
    counted = time.perf_counter()
    if gone:
        erasure.forget(db, gone)
    counters.add(**{counters.EVENTS_STORED: len(inserted), counters.EVENTS_DUPLICATE: len(docs) - len(inserted)})
    # Every user of the batch, not only the newly counted: a redelivery after a crash between the
    # summaries and this call must still get those users rescored.
    rescore.mark_changed([u for u in user_ids if u not in gone], schedule_rescore)
    return Stored(len(docs), len(inserted), applied, len(user_ids), gone,
                  round((stored - started) * 1000, 1), round((counted - stored) * 1000, 1))
