"""Storing a batch of events: MongoDB `events`, then the Postgres summaries, exactly once.

The one storage path of the product: the event-batch task, the signup task and the historical
backfill all call `store_batch`, so counters and summaries are right whichever way events came.
"""
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError
from sqlalchemy.orm import Session

from shared.contracts import event_identity
from shared.infra import counters, ingestion_lag
from shared.infra.db import session_scope
from shared.infra.mongo import EVENTS
from shared.pipeline import data_version, erasure, person_events, profile_cache, rescore, summaries, visitors

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
    user_ids: tuple[int, ...] = ()  # the users of the batch (positive ids)
    # Seconds from receipt (by the API; else by the worker) to stored and counted, of each event
    # this call inserted: observed once the batch committed, so the histogram's count grows as
    # pulse_events_stored does.
    lags: tuple[float, ...] = ()
    # False for the merge's copies (services.worker.merge): events stored and observed already,
    # under their visitor; moving them is not an ingestion (neither stored total nor lag again).
    ingested: bool = True


def insert_events(
    collection: Collection, docs: list[dict[str, Any]], batch_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Unordered bulk insert of documents stamped with `batch_id`; a duplicate key
    `(user_id, event_id)` (shared.contracts.event_identity) means that event is stored already.

    Returns (the documents this call inserted, the documents the batch owns): what it inserted,
    plus the duplicates that an earlier delivery of this same batch stored. Such a duplicate is
    recognised by the stored document itself: it must carry this batch's id AND the same identity
    and content as the batch's copy. The batch id alone is not enough: two copies of one key in
    one batch would both find "their" batch id on the one stored document and be counted twice
    (1,000 copies of a purchase counted 1,000 times). So copies within the batch are collapsed
    first (the first one wins; the others count as duplicates), and what a batch owns is then one
    stored document per key at most."""
    if not docs:
        return [], []
    for doc in docs:
        doc["batch_id"] = batch_id
    unique, _, _ = event_identity.collapse(docs)
    try:
        collection.insert_many(unique, ordered=False)
        return unique, unique
    except BulkWriteError as exc:
        details = exc.details
        fatal = [e for e in details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if fatal or details.get("writeConcernErrors"):
            raise
        duplicates = {e["index"] for e in details.get("writeErrors", [])}
    candidates = [unique[i] for i in sorted(duplicates)]
    ids_by_user: dict[int, list[str]] = {}
    for doc in candidates:
        ids_by_user.setdefault(int(doc["user_id"]), []).append(str(doc["event_id"]))
    # One query per user, each an exact range of the unique index. Not one query with `$in` on
    # both fields (a cross product of users and ids) nor an `$or` of users: on the dev server a
    # redelivered chunk of 1,000 events of 200 users took 45 s and 16 s that way, 0.2 s this way.
    stored = {
        event_identity.key(found): found
        for user_id, ids in ids_by_user.items()
        for found in collection.find(
            {"user_id": user_id, "event_id": {"$in": ids}},
            {"_id": 0, "user_id": 1, "event_id": 1, "event_type": 1, "timestamp": 1, "metadata": 1, "geo": 1,
             "batch_id": 1},
        )
    }
    ownership = owned(unique, duplicates, stored, batch_id)
    return ownership.new, ownership.new + ownership.ours


@dataclass(frozen=True)
class Ownership:
    new: list[dict]  # inserted by this call
    ours: list[dict]  # stored already, by an earlier delivery of this same batch
    theirs: list[dict]  # stored already by another batch, or with other content: not counted here


def owned(unique: list[dict], duplicates: set[int], stored: dict[event_identity.EventKey, dict],
          batch_id: str) -> Ownership:
    """Which of a batch's events (`unique`: collapsed, one copy per key, in order) count for it,
    given the positions the unique index refused (`duplicates`) and the stored documents of those
    keys (`stored`). A duplicate is the batch's own only when the stored document carries this
    batch's id AND the same identity and content (see `insert_events`)."""
    new, ours, theirs = [], [], []
    for index, doc in enumerate(unique):
        if index not in duplicates:
            new.append(doc)
            continue
        found = stored.get(event_identity.key(doc))
        if found is not None and found.get("batch_id") == batch_id \
                and event_identity.content(found) == event_identity.content(doc):
            ours.append(doc)
        else:
            theirs.append(doc)
    return Ownership(new, ours, theirs)


def store_batch(db, batch_id: str, docs: list[dict[str, Any]], schedule_rescore: Callable[[float], None],
                resolve_visitors: bool = True, ingested: bool = True, moved_from: int | None = None) -> Stored:
    """Store event documents (`event_id`, `user_id`, `event_type`, `timestamp` as a datetime, ...)
    as one batch. Safe to repeat with the same `batch_id` and documents: nothing is stored or
    counted twice, and what a killed attempt left half-done is completed.

    Documents with an `anonymous_id` are visitors' events (shared.pipeline.visitors): in the batch's
    Postgres transaction their visitors' rows are locked BEFORE the MongoDB insert and stay locked
    until the summaries commit, so an identify waits for this batch, and a batch after it reads its
    link. An anonymous-only event is stored as its visitor's user's when linked, else under the
    negative of the visitor's id; an event with both ids links an unlinked visitor to its user.
    `resolve_visitors=False` (the merge: its copies carry their user already) skips all of that;
    `ingested=False` (the merge too) keeps the copies out of the stored total and the ingestion lag;
    `moved_from` (the merge: the visitor's negative id) moves that person's `person_events` rows to
    the copies' user in the transaction that applies the copies."""
    anonymous = sorted({str(doc["anonymous_id"]) for doc in docs if doc.get("anonymous_id") is not None}) \
        if resolve_visitors else []
    if not anonymous:
        return _store(db, batch_id, docs, schedule_rescore, None, ingested, moved_from)
    linking = any(doc.get("user_id") is not None and doc.get("anonymous_id") is not None for doc in docs)
    for attempt in range(1, _ENSURE_ATTEMPTS + 1):
        with session_scope() as session:
            visitors.ensure(session, anonymous)  # committed on its own: the batch's transaction only locks
        with session_scope() as session:
            rows = visitors.lock(session, anonymous, for_update=linking)
            if len(rows) == len(anonymous):
                for anonymous_id, user_id in visitors.plan_links(docs, rows).items():
                    if visitors.link_locked(session, rows[anonymous_id], user_id):
                        rows[anonymous_id] = visitors.VisitorRow(rows[anonymous_id].id, user_id)
                result = _store(db, batch_id, visitors.resolve(docs, rows), schedule_rescore, session, ingested)
                break
        # An erasure of a visitor's user deleted its row between the two transactions: ensure it
        # again (a new, unlinked visitor, as an id sent after the erasure is), rather than a
        # KeyError, which dead-lettered the whole batch and other people's events with it.
        if attempt == _ENSURE_ATTEMPTS:
            raise VisitorRowsVanished(sorted(set(anonymous) - set(rows)))
    return _after_commit(db, result, schedule_rescore)


# Each lost row is one erasure of the user it was linked to, and a row made again is unlinked.
_ENSURE_ATTEMPTS = 3


class VisitorRowsVanished(RuntimeError):
    """Visitors' rows deleted again and again between ensure and lock."""


def _store(db, batch_id: str, docs: list[dict[str, Any]], schedule_rescore: Callable[[float], None],
           session: Session | None, ingested: bool = True, moved_from: int | None = None) -> Stored:
    """Insert and apply the resolved documents (every `user_id` an int), in `session` (the caller
    commits, then calls `_after_commit`) or in a transaction of its own."""
    # Only users enter the summaries, the profile versions and the rescoring: a visitor's events
    # (negative ids) are stored and deduplicated, and counted for its user once merged. They do
    # enter person_events (funnels count visitors): summaries.record_batch takes every owned document.
    user_ids = sorted({int(doc["user_id"]) for doc in docs if int(doc["user_id"]) > 0})
    started = time.perf_counter()
    inserted, owned = insert_events(db[EVENTS], docs, batch_id)
    stored = time.perf_counter()
    moved = (moved_from, user_ids[0]) if moved_from is not None and user_ids else None
    if session is None:
        with session_scope() as own:
            applied, gone = _apply(own, batch_id, owned, user_ids, moved)
    else:
        applied, gone = _apply(session, batch_id, owned, user_ids, moved)
    counted = time.perf_counter()
    result = Stored(len(docs), len(inserted), applied, len(user_ids), gone,
                    round((stored - started) * 1000, 1), round((counted - stored) * 1000, 1), tuple(user_ids),
                    tuple(ingestion_lag.lags(inserted, datetime.now(UTC))) if ingested else (), ingested)
    return result if session is not None else _after_commit(db, result, schedule_rescore)


def _apply(session: Session, batch_id: str, owned: list[dict[str, Any]], user_ids: list[int],
           moved: tuple[int, int] | None = None) -> tuple[bool, list[int]]:
    applied = summaries.record_batch(session, batch_id, owned)
    if moved is not None:
        # The merge's page: every row of the visitor becomes the user's in this transaction
        # (services.worker.merge), whether or not this delivery claimed the batch: on a redelivery,
        # or on a later page, the visitor has no rows left and moving nothing is harmless.
        person_events.move_person(session, *moved)
    # Profiles are computed from the summaries: new cache versions in the same transaction,
    # so no profile cached before it commits is served after (shared.pipeline.profile_cache). Every
    # user of the batch, also on a redelivery (harmless: one more miss).
    profile_cache.bump(session, user_ids)
    # After the insert: an erasure that committed before this read is undone below, one
    # that commits after it deletes these events itself (shared.pipeline.erasure).
    return applied, erasure.missing_users(session, user_ids)


def _after_commit(db, result: Stored, schedule_rescore: Callable[[float], None]) -> Stored:
    if result.gone:
        erasure.forget(db, result.gone)
    if result.ingested:
        counters.add(**{counters.EVENTS_STORED: result.inserted,
                        counters.EVENTS_DUPLICATE: result.received - result.inserted})
        ingestion_lag.observe(result.lags)
    # Every user of the batch, not only the newly counted: a redelivery after a crash between the
    # summaries and this call must still get those users rescored.
    rescore.mark_changed([u for u in result.user_ids if u not in result.gone], schedule_rescore)
    if result.applied:
        # After the commit, so a query that misses after the bump reads this batch's person_events.
        # A redelivery that applied nothing changed nothing. Never raises (data_version.changed).
        data_version.changed("events")
    return result
