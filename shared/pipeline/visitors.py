"""Anonymous visitors and their links to users (issue 23): the rows, the locks, the decisions.

A visitor is one `anonymous_id` (Postgres `visitors`). Until it is linked to a user its events are
stored under `user_id = -visitor.id`; linked, they are the user's. Three writers meet on a visitor's
row, and its row lock orders them:

- a batch storing the visitor's events (services.worker.storage) holds the row FOR SHARE (FOR
  UPDATE when the batch itself links) from before its MongoDB insert until its summaries commit;
- identify (`link`, the API's POST /api/identify and signup, and a batch's event carrying both
  ids) UPDATEs the row, so it waits for every batch in flight, and every batch after it reads the
  link: once a link commits, no new negative-id document of that visitor can appear;
- the link commits with an outbox row whose message (MERGE_VISITOR) moves the visitor's
  negative-id documents to the user (services.worker.merge).

Erasing a user erases its visitors' rows (ON DELETE CASCADE): the erasure reads their ids first
and its `user.erase` message carries them (shared.pipeline.erasure).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shared.contracts.tables import OutboxMessage, User, Visitor
from shared.contracts.topology import MERGE_VISITOR
from shared.infra import request_ids, tracing


@dataclass(frozen=True)
class VisitorRow:
    id: int
    user_id: int | None  # the user it is linked to


class LinkConflict(Exception):
    """The anonymous id is linked to another user: two people are never merged silently."""

    def __init__(self, anonymous_id: str, user_id: int) -> None:
        super().__init__(f"anonymous id {anonymous_id!r} belongs to another user")
        self.anonymous_id, self.user_id = anonymous_id, user_id


class UnknownUser(Exception):
    pass


# Sorted: two transactions inserting overlapping ids take them in one order and cannot deadlock.
_ENSURE = text(
    "INSERT INTO visitors (anonymous_id) SELECT a FROM unnest(CAST(:ids AS text[])) AS a ORDER BY a "
    "ON CONFLICT (anonymous_id) DO NOTHING"
)
_LOCK = ("SELECT id, anonymous_id, user_id FROM visitors WHERE anonymous_id = ANY(CAST(:ids AS text[])) "
         "ORDER BY anonymous_id FOR ")
_LINK = text(
    "UPDATE visitors SET user_id = :user_id, linked_at = now() "
    "WHERE id = :id AND user_id IS NULL AND EXISTS (SELECT 1 FROM users WHERE id = :user_id)"
)


def ensure(session: Session, anonymous_ids: Sequence[str]) -> None:
    """A row for each id (unlinked when new). The caller commits it apart from the batch's own
    transaction, so that transaction only reads and locks rows (a visitor without events is harmless)."""
    if anonymous_ids:
        session.execute(_ENSURE, {"ids": sorted(set(anonymous_ids))})


def lock(session: Session, anonymous_ids: Sequence[str], for_update: bool = False) -> dict[str, VisitorRow]:
    """The visitors' rows, locked for the rest of the caller's transaction in anonymous-id order:
    FOR SHARE against identify, FOR UPDATE when the caller is going to link one of them."""
    if not anonymous_ids:
        return {}
    statement = text(_LOCK + ("UPDATE" if for_update else "SHARE"))
    return {row.anonymous_id: VisitorRow(int(row.id), row.user_id)
            for row in session.execute(statement, {"ids": sorted(set(anonymous_ids))})}


def plan_links(docs: Iterable[dict[str, Any]], rows: dict[str, VisitorRow]) -> dict[str, int]:
    """Which visitors a batch links, and to whom: an event carrying both ids links its visitor when
    the visitor is not linked yet; the first such event of the batch decides (a later one naming
    another user is stored as that user's, without linking, like one whose visitor is linked to
    someone else already)."""
    links: dict[str, int] = {}
    for doc in docs:
        anonymous_id, user_id = doc.get("anonymous_id"), doc.get("user_id")
        if anonymous_id is None or user_id is None:
            continue
        row = rows.get(anonymous_id)
        if row is not None and row.user_id is None and anonymous_id not in links:
            links[anonymous_id] = int(user_id)
    return links


def resolve(docs: Iterable[dict[str, Any]], rows: dict[str, VisitorRow]) -> list[dict[str, Any]]:
    """Each document with the person it is stored under: its own `user_id` when it has one; for an
    anonymous-only event, the user its visitor is linked to, or else the negative of the visitor's
    id. (`rows` holds the links this batch made too.)"""
    resolved = []
    for doc in docs:
        if doc.get("user_id") is None:
            row = rows[doc["anonymous_id"]]
            doc = {**doc, "user_id": row.user_id if row.user_id is not None else -row.id}
        resolved.append(doc)
    return resolved


def write_merge_message(session: Session, visitor_id: int, user_id: int) -> None:
    """The outbox row that moves the visitor's stored events to the user, committed with the link."""
    with tracing.outbox_write(MERGE_VISITOR) as traceparent:
        session.add(OutboxMessage(id=uuid.uuid4(), task_name=MERGE_VISITOR,
                                  payload={"visitor_id": visitor_id, "user_id": user_id},
                                  request_id=request_ids.current(), traceparent=traceparent))


def link_locked(session: Session, row: VisitorRow, user_id: int) -> bool:
    """Link a visitor whose row the caller holds FOR UPDATE and found unlinked. False when the user
    does not exist (erased meanwhile): nothing is written."""
    if session.execute(_LINK, {"id": row.id, "user_id": user_id}).rowcount != 1:  # type: ignore[attr-defined]
        return False
    write_merge_message(session, row.id, user_id)
    return True


def link(session: Session, anonymous_id: str, user_id: int) -> bool:
    """Identify, in the caller's transaction: True when it made the link, False when the same link
    existed. Raises UnknownUser, or LinkConflict when the id is linked to another user.

    A new visitor is created linked: no batch can have stored a negative-id event of it (a batch
    stores those only under a row it read), so it needs no merge. An existing row is locked FOR
    UPDATE, which waits for the batches storing its events (they hold it FOR SHARE)."""
    if session.scalar(select(User.id).where(User.id == user_id).with_for_update(key_share=True)) is None:
        raise UnknownUser(user_id)
    created = session.execute(text(
        "INSERT INTO visitors (anonymous_id, user_id, linked_at) VALUES (:anonymous_id, :user_id, now()) "
        "ON CONFLICT (anonymous_id) DO NOTHING RETURNING id"), {"anonymous_id": anonymous_id, "user_id": user_id}
    ).first()
    if created is not None:
        return True
    rows = lock(session, [anonymous_id], for_update=True)
    row = rows[anonymous_id]
    if row.user_id == user_id:
        return False
    if row.user_id is not None:
        raise LinkConflict(anonymous_id, row.user_id)
    if not link_locked(session, row, user_id):
        raise UnknownUser(user_id)
    return True


def linked_to(session: Session, anonymous_ids: Sequence[str]) -> dict[str, int]:
    """The users these anonymous ids are linked to (unlinked and unknown ones are absent)."""
    if not anonymous_ids:
        return {}
    return {row.anonymous_id: row.user_id for row in session.execute(
        select(Visitor.anonymous_id, Visitor.user_id).where(
            Visitor.anonymous_id.in_(sorted(set(anonymous_ids))), Visitor.user_id.is_not(None)))}


def of_user(session: Session, user_id: int) -> list[tuple[int, str]]:
    """A user's visitors: (id, anonymous_id), in link order."""
    return [(int(row.id), row.anonymous_id) for row in session.execute(
        select(Visitor.id, Visitor.anonymous_id).where(Visitor.user_id == user_id)
        .order_by(Visitor.linked_at, Visitor.id))]
