"""The worker's tasks: `user.created`, activity-event batches, and the welcome e-mail.

Every write is idempotent (keyed by event id or user id), because a message may be delivered
more than once: acks are late, and the outbox relay may republish after a crash.
"""
import uuid
from datetime import UTC, datetime
from typing import Any

import pymongo
from pymongo.errors import DuplicateKeyError, PyMongoError
from sqlalchemy import delete

from services.worker import mailer
from services.worker.main import app
from services.worker.merge import merge_visitor as merge_visitor_events
from services.worker.storage import store_batch
from shared.contracts.schemas import StoreEventsMessage, UserCreatedMessage, event_document
from shared.contracts.settings import get_settings
from shared.contracts.tables import OutboxMessage
from shared.contracts.topology import (
    COMPUTE_PROFILES,
    ERASE_USER,
    MERGE_VISITOR,
    PRUNE_LEDGER,
    RECONCILE_ERASURES,
    SEND_WELCOME,
    STORE_EVENTS,
    USER_CREATED,
)
from shared.infra import task_failures
from shared.infra.db import session_scope
from shared.infra.logging import get_logger
from shared.infra.mongo import PROFILES, WELCOME_EMAILS, get_database
from shared.infra.retry import RETRY_POLICY, RETRY_UNTIL_DONE, TRANSIENT_ERRORS
from shared.pipeline import erasure, summaries

log = get_logger("pulse.worker")


def _upsert_ignoring_race(collection, selector: dict[str, Any], update: dict) -> None:
    try:
        collection.update_one(selector, update, upsert=True)
    except DuplicateKeyError:
        # Two deliveries upserted at once: the other one inserted it, which is the same result.
        collection.update_one(selector, update)


@app.task(name=USER_CREATED, **RETRY_UNTIL_DONE)  # answered 201: never dead-lettered by an outage
def user_created(**payload) -> dict[str, Any]:
    user = UserCreatedMessage.model_validate(payload)
    db = get_database()
    with session_scope() as session:
        if erasure.forget_missing(db, session, [user.user_id]):
            # Erased before this message was handled: nothing is written, nobody is welcomed.
            log.info("user_created_after_erasure", user_id=user.user_id, event_id=user.event_id)
            return {"user_id": user.user_id, "erased": True}
    _upsert_ignoring_race(
        db[PROFILES],
        {"_id": user.user_id},
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
    signup_event = event_document(
        event_id=user.event_id, user_id=user.user_id, event_type="user_created", timestamp=user.created_at,
        metadata={"username": user.username}, geo={"city": user.city, "country": user.country_code},
        received_at=datetime.now(UTC),
    )
    # The outbox id is the batch id of the signup event; storing it also queues the first profile
    # (the coalesced rescoring drain, like every event).
    stored = store_batch(db, user.event_id, [signup_event], _schedule_rescore)
    if stored.gone:
        # Erased while this message was handled: the profile and event just written are deleted
        # again (store_batch), and nobody is welcomed.
        log.info("user_created_after_erasure", user_id=user.user_id, event_id=user.event_id)
        return {"user_id": user.user_id, "erased": True}
    # The welcome e-mail has its own queue and worker: a slow SMTP server holds up nothing else.
    app.send_task(SEND_WELCOME, kwargs=payload, task_id=f"{user.event_id}.welcome")
    log.info("user_created_processed", user_id=user.user_id, event_id=user.event_id)
    return {"user_id": user.user_id}


@app.task(name=SEND_WELCOME, **RETRY_POLICY)
def send_welcome(**payload) -> dict[str, Any]:
    user = UserCreatedMessage.model_validate(payload)
    emailed = send_welcome_once(get_database(), user)
    log.info("welcome_email", user_id=user.user_id, event_id=user.event_id, sent=emailed)
    return {"user_id": user.user_id, "emailed": emailed}


def send_welcome_once(db, user: UserCreatedMessage) -> bool:
    """At most one welcome per user, except in one window: the SMTP server accepted the message and
    the process died before recording it. Marking first and sending after would instead risk never
    sending it; a second welcome is the lesser harm."""
    record = db[WELCOME_EMAILS].find_one({"_id": user.user_id})
    if record and record.get("sent_at"):
        return False
    with session_scope() as session:
        if erasure.missing_users(session, [user.user_id]):
            return False  # erased since signing up: nobody to welcome
    message = mailer.welcome_message(user)
    mailer.send(message, to=user.email)
    db[WELCOME_EMAILS].update_one(
        {"_id": user.user_id},
        {"$set": {"sent_at": datetime.now(UTC), "event_id": user.event_id, "to": user.email,
                  "message_id": message["Message-ID"]}},
        upsert=True,
    )
    with session_scope() as session:
        erasure.forget_missing(db, session, [user.user_id])  # erased while the e-mail went out
    return True


@app.task(name=ERASE_USER, bind=True, **RETRY_UNTIL_DONE)
def erase_user(self, user_id: int, second_pass: bool = False, visitor_ids: list[int] | None = None) -> dict[str, Any]:
    """Forget an erased user in MongoDB and Redis (shared.pipeline.erasure), and the outbox message that
    named them; the first pass queues the second. `visitor_ids`: the user's visitors, whose events
    a merge has not reached yet are still stored under their negative ids."""
    db = get_database()
    with session_scope() as session:
        if not erasure.missing_users(session, [user_id]):
            # Only an erasure the API committed deletes anything: this user still exists.
            log.warning("erase_refused_user_exists", user_id=user_id, task_id=self.request.id)
            return {"user_id": user_id, "erased": False}
    removed = erasure.forget(db, [user_id, *erasure.visitor_people(visitor_ids or [])])
    if not second_pass:
        app.send_task(ERASE_USER, kwargs={"user_id": user_id, "second_pass": True, "visitor_ids": visitor_ids or []},
                      countdown=erasure.ERASURE_SECOND_PASS_SECONDS, task_id=f"{self.request.id}.second-pass")
        try:
            outbox_id = uuid.UUID(self.request.id)
        except (TypeError, ValueError):
            outbox_id = None  # not sent by the relay: there is no outbox row
        if outbox_id is not None:
            with session_scope() as session:
                session.execute(delete(OutboxMessage).where(OutboxMessage.id == outbox_id))
    # Done (the second pass queued, with confirms, until done itself), unless MongoDB still
    # holds something: then the `erasures` row stays for the reconciliation.
    erasure.confirm(db, [user_id])
    log.info("user_erased", user_id=user_id, second_pass=second_pass, **removed)
    return {"user_id": user_id, "erased": True, **removed}


def _schedule_rescore(delay: float) -> None:
    app.send_task(COMPUTE_PROFILES, countdown=delay)


@app.task(name=STORE_EVENTS, bind=True, **RETRY_UNTIL_DONE)  # answered 202: stored, however long the outage
def store_events(self, **message) -> dict:
    # A message that is not a StoreEventsMessage fails for good (a ValidationError is no transient
    # error): recorded with its error in task_failures and dead-lettered, never retried.
    batch = StoreEventsMessage.model_validate(message)
    # The task id is the batch id: a redelivery or a retry of this message carries the same one.
    received_at = datetime.now(UTC)
    docs = [event.document(received_at) for event in batch.events]
    stored = store_batch(get_database(), self.request.id, docs, _schedule_rescore)
    # Phase timings: which store (MongoDB events, Postgres summaries) a slow batch waited on.
    log.info("events_stored", batch_id=self.request.id, received=stored.received, inserted=stored.inserted,
             applied=stored.applied, users=stored.users, mongo_ms=stored.mongo_ms, postgres_ms=stored.postgres_ms)
    return {"received": stored.received, "inserted": stored.inserted, "users": stored.users}


@app.task(name=MERGE_VISITOR, bind=True, **RETRY_UNTIL_DONE)  # a committed link: merged, however long the outage
def merge_visitor(self, visitor_id: int, user_id: int) -> dict[str, Any]:
    """An identified visitor's events become the user's (services.worker.merge), exactly once."""
    merged = merge_visitor_events(get_database(), int(visitor_id), int(user_id), _schedule_rescore)
    log.info("visitor_merged", visitor_id=visitor_id, user_id=user_id, task_id=self.request.id, **merged)
    return {"visitor_id": visitor_id, "user_id": user_id, **merged}


@app.task(name=PRUNE_LEDGER, **RETRY_POLICY)
def prune_applied_batches() -> dict[str, Any]:
    """Daily (beat): forget batch ids, and the recorded errors of failed tasks, older than
    APPLIED_BATCHES_RETENTION_DAYS."""
    days = get_settings().applied_batches_retention_days
    with session_scope() as session:
        removed = summaries.prune_ledger(session, days)
    failures = task_failures.prune(days)
    log.info("applied_batches_pruned", removed=removed, task_failures_removed=failures, retention_days=days)
    return {"removed": removed, "task_failures_removed": failures}


@app.task(name=RECONCILE_ERASURES)
def reconcile_erasures() -> dict[str, Any]:
    """Beat, every ERASURE_RECONCILE_SECONDS: erasures not yet confirmed are done again, and one
    page of the sweep over all ids forgets people deleted from Postgres some other way
    (shared.pipeline.erasure). No retries: a store that is down now is tried at the next run, and a failing
    periodic task must not be dead-lettered (acks are late; a failure rejects)."""
    db = get_database()
    try:
        # A second at most to learn that MongoDB is down, not the client's server-selection
        # timeout: a run during an outage must not hold for long the worker slot that the erasures
        # and batches retrying meanwhile need. The next run comes within ERASURE_RECONCILE_SECONDS.
        with pymongo.timeout(1.0):
            db.command("ping")
        reconciled = erasure.reconcile(db)
        swept = erasure.sweep_page(db, get_settings().erasure_sweep_page)
    except (*TRANSIENT_ERRORS, PyMongoError) as exc:
        log.warning("erasure_reconciliation_skipped", error=task_failures.describe(exc))
        return {"skipped": True}
    if reconciled["erasures"] or swept["forgotten"]:
        log.info("erasures_reconciled", **reconciled, swept=swept["checked"], forgotten=swept["forgotten"])
    return {**reconciled, **swept}
