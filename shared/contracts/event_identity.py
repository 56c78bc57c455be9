"""What makes two events the same event: the pair `(user_id, event_id)`.

An `event_id` is the client's idempotency key, and a client only speaks for its own users: two
people's events never collide, whatever ids their trackers chose (a shop's `order-42` and another
user's `order-42` are two events), while the same person's id sent again is a retry of the same
event. MongoDB's unique index (`uq_user_event`, shared.infra.mongo), the API's check of a request, the
worker's insert and the backfill all key on this pair, and nothing else does.

An event's *content* is what the client said happened (type, instant, metadata, geo): two copies
of one key with the same content are the same event sent twice; with different content they are
a client error (the API answers 422) or, arriving in different requests, a late copy that loses
to the first (first copy wins).

A visitor (issue 23) is a person too: before the worker resolves it (services.worker.storage), an
event sent with an `anonymous_id` only is keyed by `(anonymous_id, event_id)`; once stored it carries
the person as an int (the user it is linked to, or the negative of the visitor's id), so two visitors
using the same `event_id` are two events, and a visitor's retry is a duplicate.

The content is what the client *stated*: when a batch's `sent_at` corrected an event's clock, the
digest takes its `original_timestamp`, not the corrected instant. The correction depends on when
each attempt was received (received_at − sent_at), which a retry of the same event changes by its
network delay; the stated instant does not, so a retry stays recognisable as one.

A flagged custom event's `violations` (services.api.tracking_plan) are not content: they are the
tracking plan's verdict when the event was received, not anything the client said. The same event
re-sent after the plan changed is still the same event: counting its verdict in would make a retry
"different content" (a 422 in one request, a lost-conflict warning across requests) for a change
the client never made.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared.contracts.event_time import to_milliseconds

EventKey = tuple[int | str, str]


def person(event: dict[str, Any]) -> int | str:
    """The user id (an int; negative for a stored visitor's event), or for an event not yet
    resolved to one, `anonymous_id` (a str, so it never equals a user id)."""
    user_id = event.get("user_id")
    return int(user_id) if user_id is not None else str(event["anonymous_id"])


def key(event: dict[str, Any]) -> EventKey:
    return person(event), str(event["event_id"])


def _instant(value: Any) -> str:
    """The instant as MongoDB stores it (UTC, milliseconds), whether given as the message's ISO
    text or as a datetime read back from MongoDB: a copy compares equal to what it stored."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return to_milliseconds(moment).isoformat()


def content(event: dict[str, Any]) -> str:
    """A digest of the event's identity and content, comparable between a message's form (ISO
    text, tuples from JSON lists) and a stored document's (datetimes, BSON values)."""
    identity: dict[str, Any] = {
        "user_id": person(event),
        "event_id": str(event["event_id"]),
        "event_type": event.get("event_type"),
        "timestamp": _instant(event.get("original_timestamp") or event["timestamp"]),
        "metadata": event.get("metadata") or {},
        "geo": event.get("geo") or None,
    }
    canonical = json.dumps(
        identity,
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def collapse(events: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int], list[tuple[int, int]]]:
    """The first copy of each key, in order; the positions of later copies with the same content
    (collapsed into the first); and (first, later) positions of copies whose content differs."""
    first: dict[EventKey, int] = {}
    unique: list[dict[str, Any]] = []
    repeated: list[int] = []
    conflicts: list[tuple[int, int]] = []
    digests: dict[int, str] = {}
    for index, event in enumerate(events):
        event_key = key(event)
        earlier = first.get(event_key)
        if earlier is None:
            first[event_key] = index
            unique.append(event)
            continue
        # Digests only for keys that repeat: the common batch of distinct keys pays nothing.
        if earlier not in digests:
            digests[earlier] = content(events[earlier])
        if content(event) == digests[earlier]:
            repeated.append(index)
        else:
            conflicts.append((earlier, index))
    return unique, repeated, conflicts
