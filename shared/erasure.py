"""Forgetting a person, and handing them what Pulse holds about them.

Erasure runs in two steps, durable like a signup:

1. `erase_in_postgres` (the API's DELETE, one transaction): the person's share of the category
   sales is subtracted, their outbox messages (the signup's carries name and e-mail) deleted,
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
profile is served only under the user's current version in Postgres (shared.profile_cache), and
the erasure deletes that version with the user row.

Population statistics lose the person at once (category sales) or at the next refit (the models
and RFM breakpoints are fitted from the customer summaries, where the person no longer is).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from shared import request_ids, rescore, tracing
from shared.cache import get_redis, key
from shared.models import (
    ActivityDay,
    Address,
    CustomerCategory,
    CustomerSummary,
    OutboxMessage,
    PurchaseDay,
    User,
)
from shared.mongo import EVENTS, PROFILES, WELCOME_EMAILS
from shared.topology import ERASE_USER
from shared.user_views import UserOut, with_address

# Long enough for any request or task that was computing the person's profile when the first pass
# ran to have written it (a miss takes milliseconds; its cache lock lasts 10 s), short enough that
# nothing of theirs lingers for long.
ERASURE_SECOND_PASS_SECONDS = 30.0

_SUBTRACT_CATEGORY_SALES = text(
    # Locked in category order, as the worker's upserts lock them. A worker storing this user's
    # events holds the user's row (FOR KEY SHARE, shared.summaries.record_batch) until it commits,
    # and this erasure took it FOR UPDATE first: the two run one after the other, each seeing what
    # the other committed, in one lock order (the user's row, then categories).
    "WITH locked AS (SELECT c.category FROM category_sales c JOIN customer_categories cc "
    "  ON cc.category = c.category AND cc.user_id = :user_id ORDER BY c.category FOR UPDATE OF c) "
    "UPDATE category_sales c SET purchases = c.purchases - cc.purchases, spent = c.spent - cc.spent "
    "FROM customer_categories cc, locked WHERE cc.user_id = :user_id AND cc.category = c.category "
    "AND locked.category = c.category"
)


def erase_in_postgres(session: Session, user_id: int) -> bool:
    """Step 1, in the caller's transaction. False when there is no such user (nothing changed)."""
    user = session.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None:
        return False
    session.execute(_SUBTRACT_CATEGORY_SALES, {"user_id": user_id})
    session.execute(delete(OutboxMessage).where(OutboxMessage.payload["user_id"].astext == str(user_id)))
    address_id = user.address_id
    session.delete(user)
    session.flush()
    # Cities stay: they are shared reference data that every API process keeps in an LRU cache
    # (shared.reference), so deleting one under a concurrent signup would break that signup.
    session.execute(delete(Address).where(Address.id == address_id, ~Address.users.any()))
    with tracing.outbox_write(ERASE_USER) as traceparent:  # the relay continues this trace
        session.add(OutboxMessage(id=uuid.uuid4(), task_name=ERASE_USER, payload={"user_id": user_id},
                                  request_id=request_ids.current(), traceparent=traceparent))
    return True


def _redis_keys(user_id: int) -> list[str]:
    # The cached profile; "ver" and "writing" are the version counters Redis held before the
    # versions moved to Postgres (migration 0008), deleted too so an upgraded Redis forgets them.
    return [key("profile", user_id), key("profile", "ver", user_id), key("profile", "writing", user_id)]


def forget_in_redis(user_ids: Iterable[int]) -> int:
    """The cached profiles and pending rescoring. Returns keys deleted. (What is cached could not
    be served anyway: the user's cache version went with their row, shared.profile_cache.)"""
    ids = sorted(set(int(u) for u in user_ids))
    if not ids:
        return 0
    deleted = get_redis().delete(*[k for user_id in ids for k in _redis_keys(user_id)])
    rescore.forget(ids)
    return deleted


def forget(db, user_ids: Iterable[int]) -> dict[str, int]:
    """Step 2: delete everything MongoDB and Redis hold about these (erased) users. Idempotent."""
    ids = sorted(set(int(u) for u in user_ids))
    if not ids:
        return {}
    return {
        "events": db[EVENTS].delete_many({"user_id": {"$in": ids}}).deleted_count,
        "profiles": db[PROFILES].delete_many({"_id": {"$in": ids}}).deleted_count,
        "welcome_emails": db[WELCOME_EMAILS].delete_many({"_id": {"$in": ids}}).deleted_count,
        "cache_keys": forget_in_redis(ids),
    }


def missing_users(session: Session, user_ids: Iterable[int]) -> list[int]:
    ids = sorted(set(int(u) for u in user_ids))
    if not ids:
        return []
    found = set(session.scalars(select(User.id).where(User.id.in_(ids))))
    return [u for u in ids if u not in found]


def forget_missing(db, session: Session, user_ids: Iterable[int]) -> list[int]:
    """After writing for `user_ids`: forget those erased meanwhile. Returns them."""
    gone = missing_users(session, user_ids)
    if gone:
        forget(db, gone)
    return gone


# ----------------------------------------------------------------------------- export

def _plain(value):
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


def _rows(session: Session, model, user_id: int, order) -> list[dict]:
    columns = [c for c in model.__table__.columns if c.name != "user_id"]
    rows = session.execute(select(*columns).where(model.user_id == user_id).order_by(order)).mappings()
    return [_plain(dict(row)) for row in rows]


def export(db, session: Session, user_id: int) -> dict | None:
    """Everything Pulse holds about one person, as one JSON-ready document (None: no such user)."""
    user = session.scalar(select(User).options(with_address()).where(User.id == user_id))
    if user is None:
        return None
    summary = _rows(session, CustomerSummary, user_id, CustomerSummary.user_id)
    profile = db[PROFILES].find_one({"_id": user_id})
    welcome = db[WELCOME_EMAILS].find_one({"_id": user_id})
    events = db[EVENTS].find({"user_id": user_id}).sort([("timestamp", 1), ("event_id", 1)])
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "user": UserOut.of(user).model_dump(mode="json") | {"segment": user.segment},
        "profile": _plain(profile) if profile else None,
        "events": [_plain(event) for event in events],
        "activity_days": _rows(session, ActivityDay, user_id, ActivityDay.day),
        "purchase_days": _rows(session, PurchaseDay, user_id, PurchaseDay.day),
        "purchase_summary": summary[0] if summary else None,
        "categories": _rows(session, CustomerCategory, user_id, CustomerCategory.category),
        "welcome_email": _plain(welcome) if welcome else None,
    }
