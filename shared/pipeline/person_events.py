"""`person_events`: one row per stored event, as the insight queries read it (issue 24).

Kept like the summaries (shared.pipeline.summaries), and for the same reasons exact:

* ingestion: `record` runs inside `summaries.record_batch`, after the batch id is claimed, so a
  batch's rows are inserted in the transaction that counts it, once, whatever is redelivered or
  killed. Unlike the other summaries it takes visitors' events too (person_id = the negative
  `user_id` MongoDB stores them under), since funnels and retention count visitors not yet
  identified;
* merge (services.worker.merge): the user's copies enter through the same path, and `move_person`
  moves all of the visitor's rows to the user in the first page's transaction, so a person is never
  counted as both the visitor and the user;
* erasure (shared.pipeline.erasure): `forget_people` deletes the user's and its visitors' rows in
  the erasure's transaction. A batch racing it writes nothing for a person whose row is gone: the
  insert keeps only persons whose `users` / `visitors` row exists when it runs, and the batch holds
  those rows locked (users FOR KEY SHARE, visitors FOR SHARE) until it commits;
* `pulse summaries rebuild` recounts the table from MongoDB `events` with the same filter
  (`KNOWN_PERSON`) over a temporary table of the events.

`properties` is what a funnel step's `where` matches by equality (jsonb `@>`): the top-level
metadata entries that are short strings, integers, finite floats or booleans.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.contracts.event_time import to_milliseconds
from shared.infra.db import rowcount

# A longer string is a description or a URL, not something a step filters on by equality; keeping
# it would make every row (and the index-only scans reading it) as large as the raw event.
MAX_PROPERTY_CHARS = 200

# A person whose row exists: a user (positive id), or a visitor not yet identified (negative id,
# `-visitors.id`). An event of an erased person adds nothing (as in activity_days). Shared by the
# batch path and the recount, so both keep the same rows. `e` is the candidate rows' alias.
KNOWN_PERSON = (
    "((e.person_id > 0 AND EXISTS (SELECT 1 FROM users u WHERE u.id = e.person_id)) "
    "OR (e.person_id < 0 AND EXISTS (SELECT 1 FROM visitors v WHERE v.id = -e.person_id)))"
)

# One statement per batch, the rows sorted by key (person_id, event_id) so two workers inserting
# overlapping keys wait for each other in one order and cannot deadlock. DO NOTHING: an event is
# stored (and so counted) by one batch only; a conflict is a row a rebuild already wrote.
_INSERT = text("".join(("""
    INSERT INTO person_events (person_id, event_id, event_type, at, properties)
    SELECT e.person_id, e.event_id, e.event_type, e.at, e.properties
    FROM unnest(CAST(:person_ids AS bigint[]), CAST(:event_ids AS text[]), CAST(:event_types AS text[]),
                CAST(:stamps AS timestamptz[]), CAST(:properties AS jsonb[]))
         AS e(person_id, event_id, event_type, at, properties)
    WHERE """, KNOWN_PERSON, """
    ORDER BY e.person_id, e.event_id
    ON CONFLICT (person_id, event_id) DO NOTHING
    """)))

# A merge moves ALL of the visitor's rows to its user in the transaction of its first page, not a
# page's rows per page: between two pages a funnel would otherwise count the person twice (the user
# with the first pages' events, the visitor with the rest). The copies' rows that later pages add
# then conflict and add nothing. A visitor's event id the user has already (the same id sent with
# the user_id) stays the user's one row, as its document does. Only to a user that still exists:
# the batch holds the user's row FOR KEY SHARE, so an erasure comes wholly before or after.
_MOVE_PERSON = text("""
    WITH moved AS (DELETE FROM person_events WHERE person_id = :from_id
                   RETURNING event_id, event_type, at, properties)
    INSERT INTO person_events (person_id, event_id, event_type, at, properties)
    SELECT CAST(:to_id AS bigint), m.event_id, m.event_type, m.at, m.properties FROM moved m
    WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = :to_id)
    ORDER BY m.event_id
    ON CONFLICT (person_id, event_id) DO NOTHING
""")

_FORGET_PEOPLE = text("DELETE FROM person_events WHERE person_id = ANY(CAST(:person_ids AS bigint[]))")


def properties(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entries of an event's metadata a funnel step can match by equality: top-level values
    that are a str of at most MAX_PROPERTY_CHARS characters, an int, a finite float or a bool.

    A bool stays a bool (JSON true is not 1: `{"trial": true}` must not match `{"trial": 1}`).
    Left out: nested objects and arrays, longer strings, NaN and infinities (JSON has none), and
    strings holding NUL (Postgres' jsonb cannot store U+0000; the tracking plan lets custom
    metadata values hold it, and one such value must not fail a whole batch)."""
    kept: dict[str, Any] = {}
    for name, value in (metadata or {}).items():
        if not isinstance(name, str):
            continue
        if isinstance(value, bool):
            kept[name] = value
        elif isinstance(value, int):
            kept[name] = int(value)  # bson.Int64 is an int subclass: plain int for json
        elif isinstance(value, float):
            if math.isfinite(value):
                kept[name] = value
        elif isinstance(value, str):
            if len(value) <= MAX_PROPERTY_CHARS and "\x00" not in value:
                kept[name] = value
    return kept


def instant(moment: datetime) -> datetime:
    """An event's time as MongoDB keeps it (milliseconds, UTC; a document read back is naive)."""
    return to_milliseconds(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def row(doc: Mapping[str, Any]) -> tuple[int, str, str, datetime, str]:
    """The person_events row of one stored event document: (person_id, event_id, event_type, at,
    properties as JSON text)."""
    return (int(doc["user_id"]), str(doc["event_id"]), str(doc["event_type"]), instant(doc["timestamp"]),
            json.dumps(properties(doc.get("metadata")), ensure_ascii=False, allow_nan=False,
                       separators=(",", ":")))


def record(session: Session, docs: Iterable[Mapping[str, Any]]) -> int:
    """Insert one row per stored event document (users' and visitors' alike), in the caller's
    transaction. One statement. Returns the rows inserted."""
    rows = sorted((row(doc) for doc in docs), key=lambda r: (r[0], r[1]))
    if not rows:
        return 0
    return rowcount(session.execute(_INSERT, {
        "person_ids": [r[0] for r in rows],
        "event_ids": [r[1] for r in rows],
        "event_types": [r[2] for r in rows],
        "stamps": [r[3] for r in rows],
        "properties": [r[4] for r in rows],
    }))


def move_person(session: Session, from_id: int, to_id: int) -> int:
    """Move every row of a visitor (`from_id` < 0) to its user (`to_id`), in the transaction that
    applies a merge page's copies (services.worker.merge). Idempotent: once moved, the visitor has
    no rows left (no batch stores under its negative id after the link). Returns the rows added."""
    return rowcount(session.execute(_MOVE_PERSON, {"from_id": int(from_id), "to_id": int(to_id)}))


def forget_people(session: Session, person_ids: Iterable[int]) -> int:
    """Delete every row of these persons (a user's id, its visitors' negative ids)."""
    ids = sorted({int(p) for p in person_ids})
    if not ids:
        return 0
    return rowcount(session.execute(_FORGET_PEOPLE, {"person_ids": ids}))
