"""Forgetting a person, and handing them what Pulse holds about them.

Erasure runs in two steps, durable like a signup:

1. `erase_in_postgres` (the API's DELETE, one transaction): the person's share of the category
   sales is subtracted, their outbox messages (the signup's carries name and e-mail) deleted,
   their `person_events` rows and their visitors' deleted (no foreign key cascades those),
   the user and address rows deleted (counters, purchase summaries, categories and pending
   rescoring go with them, ON DELETE CASCADE), and a `user.erase` outbox message written.
2. The worker, given that message, `forget`s them in MongoDB (events, profile, welcome-e-mail
   record) and Redis (cached profile, pending rescoring), then deletes the
   outbox message that named them.

User ids come from a sequence and are never reused, so "no user row" is the only tombstone
needed: the API refuses events for an id it does not know (422), and every writer that could be
mid-write for the person when the row went (a stored event batch, a signup's welcome, a
rescoring) checks afterwards with `forget_missing` and forgets whoever is gone. Checking *after*
its own write is what makes that exact: if the user still existed then, the erasure committed
later, so its `user.erase` (published after that commit) deletes what the writer wrote.
The one writer that does not check is an API profile miss, which caches under a version read
before it computed; the worker's second pass, ERASURE_SECOND_PASS_SECONDS later, removes what
such a late cache write (or anything else racing the first pass) put back. Nothing cached for the
person is ever served meanwhile, nor after Redis is restored from an older snapshot: a cached
profile is served only under the user's current version in Postgres (shared.pipeline.profile_cache), and
the erasure deletes that version with the user row.

Population statistics lose the person at once (category sales) or at the next refit (the models
and RFM breakpoints are fitted from the customer summaries, where the person no longer is).

Nothing may make an erasure undone or forgotten:

- `user.erase` retries until it succeeds (shared.infra.retry.UntilDone: never dead-lettered by an outage).
- Step 1 also writes the id into `erasures` (with the ids of the user's visitors, whose events not
  merged yet are stored under their negatives: the reconciliation's only way to find them); the
  worker deletes that row once its first pass is done and the second queued (`confirm`: MongoDB
  answers that nothing of the person, visitors included, is left). The
  reconciliation (`reconcile`, beat every ERASURE_RECONCILE_SECONDS) does step 2 again for every
  row still there after the second pass's window, and confirms the same way. Its cost is the
  unconfirmed erasures, a batch at a time, never a scan of `events`; in the end not even the id
  stays.
- The sweep (`sweep_page`, one page of ERASURE_SWEEP_PAGE ids per run, wrapping around) catches a
  person deleted from Postgres some other way (by hand, a restored backup): ids come from a
  sequence, so the ids below its value that have no user row are exactly those that may have left
  something; each page asks MongoDB about those ids only, through its indexes.
- Erasure also deletes the person's recorded task failures (shared.infra.task_failures keeps the user
  ids of each), and published outbox messages of everyone are pruned after OUTBOX_RETENTION_HOURS
  (services.api.outbox_relay).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pymongo.database import Database
from sqlalchemy import Integer, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import InstrumentedAttribute, Session

from shared.contracts.tables import (
    ActivityDay,
    Address,
    CustomerCategory,
    CustomerSummary,
    Erasure,
    OutboxMessage,
    PurchaseDay,
    SweepCursor,
    TrackingViolation,
    User,
)
from shared.contracts.topology import ERASE_USER
from shared.contracts.users import UserOut, with_address
from shared.infra import request_ids, task_failures, tracing
from shared.infra.cache import get_redis, key, reply
from shared.infra.db import rowcount, session_scope
from shared.infra.mongo import EVENTS, PROFILES, WELCOME_EMAILS, Document
from shared.pipeline import person_events, profile_cache, rescore, visitors

# Long enough for any request or task that was computing the person's profile when the first pass
# ran to have written it (a miss takes milliseconds; its cache lock lasts 10 s), short enough that
# nothing of theirs lingers for long.
ERASURE_SECOND_PASS_SECONDS = 30.0

_SUBTRACT_CATEGORY_SALES = text(
    # Locked in category order, as the worker's upserts lock them. A worker storing this user's
    # events holds the user's row (FOR KEY SHARE, shared.pipeline.summaries.record_batch) until it commits,
    # and this erasure took it FOR UPDATE first: the two run one after the other, each seeing what
    # the other committed, in one lock order (the user's row, then categories).
    "WITH locked AS (SELECT c.category FROM category_sales c JOIN customer_categories cc "
    "  ON cc.category = c.category AND cc.user_id = :user_id ORDER BY c.category FOR UPDATE OF c) "
    "UPDATE category_sales c SET purchases = c.purchases - cc.purchases, spent = c.spent - cc.spent "
    "FROM customer_categories cc, locked WHERE cc.user_id = :user_id AND cc.category = c.category "
    "AND locked.category = c.category"
)


def _subtract_category_sales(session: Session, user: User, address_id: int | None) -> None:
    session.execute(_SUBTRACT_CATEGORY_SALES, {"user_id": user.id})


def _delete_outbox_messages(session: Session, user: User, address_id: int | None) -> None:
    session.execute(delete(OutboxMessage).where(OutboxMessage.payload["user_id"].astext == str(user.id)))


_ERASED_VISITORS = "erased_visitors"
_ERASED_ANONYMOUS_IDS = "erased_anonymous_ids"


def _delete_visitors(session: Session, user: User, address_id: int | None) -> None:
    # Their rows would go with the user's (ON DELETE CASCADE), but their ids are what names their
    # events still stored under negative ids (a merge not done yet): kept for the ledger row and the
    # erase message (the ledger's copy is what the reconciliation finds them by if the message is lost).
    # Deleting them waits for any batch storing their events (it holds them FOR SHARE).
    rows = session.execute(text("DELETE FROM visitors WHERE user_id = :user_id RETURNING id, anonymous_id"),
                           {"user_id": user.id}).all()
    session.info[_ERASED_VISITORS] = sorted(int(row.id) for row in rows)
    # The tracking plan's violation examples of the visitor's events (before the link) name the
    # anonymous id, not the user: cleared with the user's (the next step).
    session.info[_ERASED_ANONYMOUS_IDS] = sorted(str(row.anonymous_id) for row in rows)


def _delete_person_events(session: Session, user: User, address_id: int | None) -> None:
    # No foreign key can cascade them (a person is a user or a visitor): deleted by id, the user's and
    # its visitors' (not merged yet). A batch storing their events holds the user's row FOR KEY SHARE
    # or the visitors' FOR SHARE until it commits, and both are locked FOR UPDATE above: its rows are
    # committed before this reads, and a batch after it finds neither row and inserts none.
    person_events.forget_people(session, [user.id, *visitor_people(session.info.get(_ERASED_VISITORS, []))])


def _delete_user(session: Session, user: User, address_id: int | None) -> None:
    session.delete(user)
    session.flush()


def _delete_address(session: Session, user: User, address_id: int | None) -> None:
    # Cities stay: they are shared reference data that every API process keeps in an LRU cache
    # (shared.pipeline.reference), so deleting one under a concurrent signup would break that signup.
    session.execute(delete(Address).where(Address.id == address_id, ~Address.users.any()))


def _forget_task_failures(session: Session, user: User, address_id: int | None) -> None:
    task_failures.forget_people(session, [user.id])


def _clear_violation_examples(session: Session, user: User, address_id: int | None) -> None:
    # The tracking plan's violations keep counts and rules, never a person; their example (an event's
    # id, field, message) names one and goes with them (services.api.tracking_plan records it while
    # holding the user row this erasure locked first, so none is written after this).
    forget_violation_examples(session, user_ids=[user.id], anonymous_ids=session.info.pop(_ERASED_ANONYMOUS_IDS, []))


def forget_violation_examples(session: Session, user_ids: Iterable[int] = (), anonymous_ids: Iterable[str] = ()) -> int:
    """Clear the tracking-plan violation examples of these people (users' ids, visitors' anonymous ids)."""
    users, visitors = list(user_ids), list(anonymous_ids)
    if not users and not visitors:
        return 0
    cleared = {"example": None, "example_user_id": None, "example_anonymous_id": None}
    whose = TrackingViolation.example_user_id.in_(users) | TrackingViolation.example_anonymous_id.in_(visitors)
    return rowcount(session.execute(update(TrackingViolation).where(whose).values(**cleared)))


def _write_ledger(session: Session, user: User, address_id: int | None) -> None:
    # The ledger the reconciliation completes from, should the message below never do its work:
    # the visitors' ids too, since their rows are gone with this transaction.
    visitor_ids = session.info.get(_ERASED_VISITORS) or None
    session.execute(insert(Erasure).values(user_id=user.id, visitor_ids=visitor_ids).on_conflict_do_nothing())


def _write_erase_message(session: Session, user: User, address_id: int | None) -> None:
    with tracing.outbox_write(ERASE_USER) as traceparent:  # the relay continues this trace
        payload: dict[str, Any] = {"user_id": user.id}
        if visitor_ids := session.info.pop(_ERASED_VISITORS, []):
            payload["visitor_ids"] = visitor_ids
        session.add(OutboxMessage(id=uuid.uuid4(), task_name=ERASE_USER, payload=payload,
                                  request_id=request_ids.current(), traceparent=traceparent))


# Step 1's parts, in the order they run in its one transaction. Where a part reads what another
# deletes, the order is what makes it right (tests/unit/test_erasure_order.py holds these):
# - the category sales are reduced by the person's `customer_categories`, which go with the user
#   row (ON DELETE CASCADE): subtracted first;
# - the outbox messages naming the person are deleted before the `user.erase` message, which names
#   them too, is written;
# - an address is deleted only when no user lives there any more: after the user row;
# - the visitors' ids are read (as their rows are deleted) before the ledger row and the erase
#   message that name them, and before the person_events rows, which name the visitors by them.
# The ledger row and the message commit with the user row's deletion, or none of them does.
IN_POSTGRES = ("category_sales", "outbox_messages", "visitors", "person_events", "user", "address",
               "task_failures", "violation_examples", "ledger", "erase_message")
_IN_POSTGRES_STEPS = {
    "category_sales": _subtract_category_sales,
    "outbox_messages": _delete_outbox_messages,
    "visitors": _delete_visitors,
    "person_events": _delete_person_events,
    "user": _delete_user,
    "address": _delete_address,
    "task_failures": _forget_task_failures,
    "violation_examples": _clear_violation_examples,
    "ledger": _write_ledger,
    "erase_message": _write_erase_message,
}


def erase_in_postgres(session: Session, user_id: int) -> bool:
    """Step 1, in the caller's transaction. False when there is no such user (nothing changed)."""
    # The user's visitors' rows first, then the user's: the order a batch storing their events
    # takes them in (the visitors FOR SHARE, then the user FOR KEY SHARE). The other order
    # deadlocked against such a batch (schemathesis in CI: a DELETE answered 503 after 3 deadlocks).
    session.execute(text("SELECT id FROM visitors WHERE user_id = :user_id ORDER BY anonymous_id FOR UPDATE"),
                    {"user_id": user_id})
    user = session.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None:
        return False
    address_id = user.address_id
    for step in IN_POSTGRES:
        _IN_POSTGRES_STEPS[step](session, user, address_id)
    return True


def _redis_keys(user_id: int) -> list[str]:
    # The cached profile in every shape (one cached before a deploy that changed the shape lives
    # until its TTL), and "ver": the version counter Redis held before the versions moved to
    # Postgres (migration 0008). It had no expiry, so a Redis upgraded along the README's path for
    # 0008-0010 still holds it. (Its companion "writing" expired within ten minutes: none is left.)
    return [*profile_cache.shape_keys(user_id), key("profile", "ver", user_id)]


def forget_in_redis(user_ids: Iterable[int]) -> int:
    """The cached profiles and pending rescoring. Returns keys deleted. (What is cached could not
    be served anyway: the user's cache version went with their row, shared.pipeline.profile_cache.)"""
    ids = sorted(set(int(u) for u in user_ids))
    if not ids:
        return 0
    deleted: int = reply(get_redis().delete(*[k for user_id in ids for k in _redis_keys(user_id)]))
    rescore.forget(ids)
    return deleted


# What MongoDB holds of a person: each collection, with the indexed field that names them. Step 2
# deletes from each, and an erasure is confirmed (its ledger row deleted) only once none of them
# answers for the person: the one list for both, so nothing is confirmed that was not erased.
IN_MONGODB = ((EVENTS, "user_id"), (PROFILES, "_id"), (WELCOME_EMAILS, "_id"))


def visitor_people(visitor_ids: Iterable[int]) -> list[int]:
    """The `user_id`s an erased user's visitors' events not merged yet are stored under."""
    return [-int(v) for v in visitor_ids]


def forget(db: Database[Document], user_ids: Iterable[int]) -> dict[str, int]:
    """Step 2: delete everything MongoDB and Redis hold about these (erased) users, and the task
    failures recorded about them since step 1. Idempotent. (An erased user's visitors come as
    their negative ids, `visitor_people`: their events go the same way.)"""
    ids = sorted(set(int(u) for u in user_ids))
    if not ids:
        return {}
    removed = {collection: db[collection].delete_many({field: {"$in": ids}}).deleted_count
               for collection, field in IN_MONGODB}
    removed["cache_keys"] = forget_in_redis(ids)
    with session_scope() as session:
        removed["task_failures"] = task_failures.forget_people(session, ids)
    return removed


def left_in_mongodb(db: Database[Document], user_ids: list[int]) -> set[int]:
    """Which of these users MongoDB still holds anything of, asked through indexes only
    (`ix_user_time` of events, `_id` of the others). An erased user's visitors are asked about by
    their negative ids (`visitor_people`): `ledger_people` gives them with the user's."""
    if not user_ids:
        return set()
    found: set[int] = set()
    for collection, field in IN_MONGODB:
        found.update(db[collection].distinct(field, {field: {"$in": user_ids}}))
    return {int(u) for u in found}


def closable(user_ids: Iterable[int], left: set[int], visitors_of: dict[int, list[int]] | None = None) -> list[int]:
    """The erasures that may be closed: those of the users MongoDB holds nothing of any more, nor
    of any of their visitors (`visitors_of`: user id -> visitor ids, from the ledger)."""
    visitors_of = visitors_of or {}
    return sorted(u for u in set(user_ids)
                  if u not in left and not left.intersection(visitor_people(visitors_of.get(u, []))))


def ledger_visitors(session: Session, user_ids: Iterable[int]) -> dict[int, list[int]]:
    """The visitor ids the `erasures` rows of these users keep (users without visitors absent)."""
    ids = sorted(set(int(u) for u in user_ids))
    if not ids:
        return {}
    rows = session.execute(select(Erasure.user_id, Erasure.visitor_ids).where(Erasure.user_id.in_(ids)))
    return {int(user_id): [int(v) for v in visitor_ids] for user_id, visitor_ids in rows if visitor_ids}


def ledger_people(user_ids: Iterable[int], visitors_of: dict[int, list[int]]) -> list[int]:
    """The ids MongoDB names these erased users and their visitors by."""
    ids = sorted(set(int(u) for u in user_ids))
    return ids + visitor_people(v for u in ids for v in visitors_of.get(u, []))


# How many unconfirmed erasures one reconciliation run takes on: bounded work per run whatever
# an outage left behind; the rest wait for the next run.
RECONCILE_BATCH = 500


def reconcile(db: Database[Document], batch: int = RECONCILE_BATCH) -> dict[str, int]:
    """Do step 2 again for erasures not yet confirmed and older than the second pass (whose window
    is the worker's to close), then confirm each that MongoDB no longer holds anything of."""
    with session_scope() as session:
        ids = list(session.scalars(
            select(Erasure.user_id).where(
                Erasure.erased_at < datetime.now(UTC) - timedelta(seconds=ERASURE_SECOND_PASS_SECONDS))
            .order_by(Erasure.erased_at).limit(batch)))
    if not ids:
        return {"erasures": 0, "confirmed": 0}
    # Only people still without a user row: an id in `erasures` is never reused, but be exact.
    with session_scope() as session:
        ids = missing_users(session, ids)
        visitors_of = ledger_visitors(session, ids)
    # The visitors' events not merged yet, by the ids the ledger kept: the message that named them
    # may be the one that was lost.
    forget(db, ledger_people(ids, visitors_of))
    return {"erasures": len(ids), "confirmed": len(confirm(db, ids))}


def confirm(db: Database[Document], user_ids: list[int]) -> list[int]:
    """Close the erasures of those of these users MongoDB holds nothing of any more (the worker,
    and the reconciliation): their `erasures` rows go. Returns them. Their visitors count: an
    erasure is open while MongoDB holds an event of one of the visitor ids its row keeps."""
    with session_scope() as session:
        visitors_of = ledger_visitors(session, user_ids)
    confirmed = closable(user_ids, left_in_mongodb(db, ledger_people(user_ids, visitors_of)), visitors_of)
    if confirmed:
        with session_scope() as session:
            session.execute(delete(Erasure).where(Erasure.user_id.in_(confirmed)))
    return confirmed


SWEEP = "erasure"


def sweep_page(db: Database[Document], page: int) -> dict[str, int]:
    """One page of the sweep: ids [cursor, cursor + page) below the users sequence's value that
    have no user row. Whoever among them MongoDB still holds something of (a person deleted from
    Postgres behind Pulse's back) is forgotten everywhere. Redis, task failures and outbox messages
    are cleared for every such id (a delete of what is absent costs an index look-up)."""
    with session_scope() as session:
        highest = session.scalar(text("SELECT pg_sequence_last_value(pg_get_serial_sequence('users', 'id'))")) or 0
        # Created once, by whichever run comes first; locked, so two runs never take the same page.
        session.execute(insert(SweepCursor).values(name=SWEEP, next_id=1).on_conflict_do_nothing())
        cursor = session.get(SweepCursor, SWEEP, with_for_update=True)
        assert cursor is not None  # inserted just above unless it was there; cursors are never deleted
        start = cursor.next_id if cursor.next_id <= highest else 1
        end = min(start + page, highest + 1)
        present = set(session.scalars(select(User.id).where(User.id >= start, User.id < end)))
        missing = [u for u in range(start, end) if u not in present]
        if end > highest:  # the cycle is complete: the next run starts at 1 again
            cursor.next_id = 1
            cursor.last_cycle_completed_at = datetime.now(UTC)
            cursor.cycle_started_at = datetime.now(UTC)
        else:
            cursor.next_id = end
    # The cursor moves on first: a page that fails below is checked again in the next cycle.
    if not missing:
        return {"checked": max(0, end - start), "forgotten": 0}
    leftover = left_in_mongodb(db, missing)
    # Asked again after MongoDB answered: a signup that committed after the read above had its
    # first document written only after that commit, so this read sees its user row.
    with session_scope() as session:
        missing = missing_users(session, missing)
        forgotten = sorted(leftover & set(missing))
        task_failures.forget_people(session, missing)
        # person_events has no foreign key to users to cascade from (one index range per id).
        person_events.forget_people(session, missing)
        # A signup's published message (name, e-mail, street) of a person deleted by hand; the
        # NOT EXISTS guards a signup committing meanwhile (its row and message commit together).
        session.execute(delete(OutboxMessage).where(
            OutboxMessage.payload["user_id"].astext.in_([str(u) for u in missing]),
            OutboxMessage.task_name != ERASE_USER,
            ~select(User.id).where(User.id == OutboxMessage.payload["user_id"].astext.cast(Integer)).exists()))
    forget_in_redis(missing)
    if forgotten:
        forget(db, forgotten)
    return {"checked": end - start, "forgotten": len(forgotten)}


def missing_users(session: Session, user_ids: Iterable[int]) -> list[int]:
    ids = sorted(set(int(u) for u in user_ids))
    if not ids:
        return []
    found = set(session.scalars(select(User.id).where(User.id.in_(ids))))
    return [u for u in ids if u not in found]


def forget_missing(db: Database[Document], session: Session, user_ids: Iterable[int]) -> list[int]:
    """After writing for `user_ids`: forget those erased meanwhile. Returns them."""
    gone = missing_users(session, user_ids)
    if gone:
        forget(db, gone)
    return gone


# ----------------------------------------------------------------------------- export

def _plain(value: Any) -> Any:
    """BSON and SQL values as JSON: datetimes in ISO 8601, decimals as numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in ("_id", "batch_id")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _rows(session: Session, model: type[CustomerSummary | ActivityDay | PurchaseDay | CustomerCategory], user_id: int,
          order: InstrumentedAttribute[Any]) -> list[dict[str, Any]]:
    columns = [c for c in model.__table__.columns if c.name != "user_id"]
    rows = session.execute(select(*columns).where(model.user_id == user_id).order_by(order)).mappings()
    return [_plain(dict(row)) for row in rows]


def export(db: Database[Document], session: Session, user_id: int) -> dict[str, Any] | None:
    """Everything Pulse holds about one person, as one JSON-ready document (None: no such user)."""
    user = session.scalar(select(User).options(with_address()).where(User.id == user_id))
    if user is None:
        return None
    summary = _rows(session, CustomerSummary, user_id, CustomerSummary.user_id)
    profile = db[PROFILES].find_one({"_id": user_id})
    welcome = db[WELCOME_EMAILS].find_one({"_id": user_id})
    events = db[EVENTS].find({"user_id": user_id}).sort([("timestamp", 1), ("event_id", 1)])
    # Not listed: person_events. Each row is a projection of one event under "events" (its id, type,
    # time and top-level scalar metadata), so it would hand the person the same data twice and
    # double the export's size for nothing; the rollups above are listed because they hold what the
    # events do not (counts and sums Pulse computed about the person).
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "user": UserOut.of(user).model_dump(mode="json") | {"segment": user.segment},
        "anonymous_ids": [anonymous_id for _, anonymous_id in visitors.of_user(session, user_id)],
        "profile": _plain(profile) if profile else None,
        "events": [_plain(event) for event in events],
        "activity_days": _rows(session, ActivityDay, user_id, ActivityDay.day),
        "purchase_days": _rows(session, PurchaseDay, user_id, PurchaseDay.day),
        "purchase_summary": summary[0] if summary else None,
        "categories": _rows(session, CustomerCategory, user_id, CustomerCategory.category),
        "welcome_email": _plain(welcome) if welcome else None,
    }
