"""The worker's tasks: `user.created` and activity-event batches into MongoDB.

Every write is idempotent (keyed by event id or user id), because a message may be delivered
more than once: acks are late, and the outbox relay may republish after a crash.
"""
import time
from datetime import UTC, datetime

from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.worker import mailer
from services.worker.main import app
from shared import activity, profile_cache, rescore
from shared.db import session_scope
from shared.logging import get_logger
from shared.mongo import EVENTS, PROFILES, WELCOME_EMAILS, get_database
from shared.retry import RETRY_POLICY
from shared.schemas import UserCreatedMessage
from shared.topology import COMPUTE_PROFILES, STORE_EVENTS, USER_CREATED

log = get_logger("pulse.worker")
DUPLICATE_KEY = 11000


def _upsert_ignoring_race(collection, selector: dict, update: dict) -> None:
    try:
        collection.update_one(selector, update, upsert=True)
    except DuplicateKeyError:
        # Two deliveries upserted at once: the other one inserted it, which is the same result.
        collection.update_one(selector, update)


@app.task(name=USER_CREATED, **RETRY_POLICY)
def user_created(**payload) -> dict:
    user = UserCreatedMessage.model_validate(payload)
    db = get_database()
    now = datetime.now(UTC)
    _upsert_ignoring_race(
        db[PROFILES],
        {"user_id": user.user_id},
        {
            "$setOnInsert": {"user_id": user.user_id, "created_at": user.created_at, "segment": None},
            "$set": {
                "username": user.username,
                "email": user.email,
                "full_name": user.full_name,
                "city": user.city,
                "country_code": user.country_code,
            },
        },
    )
    signup_event = {
        "event_id": user.event_id,
        "user_id": user.user_id,
        "event_type": "user_created",
        "timestamp": user.created_at.astimezone(UTC),
        "metadata": {"username": user.username},
        "geo": {"city": user.city, "country": user.country_code},
        "received_at": now,
    }
    count_activity(insert_events(db[EVENTS], [signup_event]))
    emailed = send_welcome_once(db, user)
    app.send_task(COMPUTE_PROFILES, kwargs={"user_ids": [user.user_id]})
    log.info("user_created_processed", user_id=user.user_id, event_id=user.event_id, emailed=emailed)
    return {"user_id": user.user_id, "emailed": emailed}


def send_welcome_once(db, user: UserCreatedMessage) -> bool:
    """At most one welcome per user, except in one window: the SMTP server accepted the message and
    the process died before recording it. Marking first and sending after would instead risk never
    sending it; a second welcome is the lesser harm."""
    record = db[WELCOME_EMAILS].find_one({"_id": user.user_id})
    if record and record.get("sent_at"):
        return False
    message = mailer.welcome_message(user)
    mailer.send(message)
    db[WELCOME_EMAILS].update_one(
        {"_id": user.user_id},
        {"$set": {"sent_at": datetime.now(UTC), "event_id": user.event_id, "to": user.email,
                  "message_id": message["Message-ID"]}},
        upsert=True,
    )
    return True


def event_documents(events: list[dict], received_at: datetime) -> list[dict]:
    docs = []
    for event in events:
        doc = dict(event)
        doc["timestamp"] = datetime.fromisoformat(event["timestamp"]).astimezone(UTC)
        doc["received_at"] = received_at
        if doc.get("geo") is None:
            doc.pop("geo", None)
        docs.append(doc)
    return docs


def insert_events(collection, docs: list[dict]) -> list[dict]:
    """Unordered bulk insert; a duplicate event_id means that event is already stored.
    Returns the documents this call inserted."""
    if not docs:
        return []
    try:
        collection.insert_many(docs, ordered=False)
        return docs
    except BulkWriteError as exc:
        details = exc.details
        fatal = [e for e in details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if fatal or details.get("writeConcernErrors"):
            raise
        already = {e["index"] for e in details.get("writeErrors", [])}
        return [doc for i, doc in enumerate(docs) if i not in already]


def count_activity(inserted: list[dict]) -> None:
    """Add what this delivery inserted to the daily counters (shared.activity), so a redelivery
    adds nothing. A crash between the insert and this leaves that batch uncounted (the events
    are stored; `python -m shared.activity rebuild` recounts)."""
    if inserted:
        with session_scope() as session:
            activity.record(session, inserted)


@app.task(name=STORE_EVENTS, **RETRY_POLICY)
def store_events(events: list[dict]) -> dict:
    db = get_database()
    docs = event_documents(events, datetime.now(UTC))
    user_ids = sorted({doc["user_id"] for doc in docs})
    started = time.perf_counter()
    # Bracket the write so that no profile cached before or during it can be served after it.
    profile_cache.begin_events_write(user_ids)
    try:
        inserted = insert_events(db[EVENTS], docs)
        stored = time.perf_counter()
        count_activity(inserted)
        counted = time.perf_counter()
    finally:
        profile_cache.end_events_write(user_ids)
    # Every user in the batch, not only the newly inserted: a redelivery after a crash between
    # the insert and this call must still get those users rescored.
    rescore.mark_changed(user_ids, lambda delay: app.send_task(COMPUTE_PROFILES, countdown=delay))
    # Phase timings: which store (MongoDB events, Postgres counters) a slow batch waited on.
    log.info("events_stored", received=len(docs), inserted=len(inserted), users=len(user_ids),
             mongo_ms=round((stored - started) * 1000, 1), postgres_ms=round((counted - stored) * 1000, 1),
             total_ms=round((time.perf_counter() - started) * 1000, 1))
    return {"received": len(docs), "inserted": len(inserted), "users": len(user_ids)}
