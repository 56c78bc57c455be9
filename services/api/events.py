"""Activity events: validated here, published in chunks, stored by the worker.

202 means every event is in RabbitMQ (publisher confirms). When the broker is down the answer
is 503 and the client retries: with its own `event_id`s a retry can never duplicate an event
(an event is `(user_id, event_id)`, shared.contracts.event_identity).
"""
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

import redis
from flask import current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.api import tracking_plan
from services.api.problems import FieldProblem, Problem, ProblemError, problem_response
from shared.contracts import event_identity
from shared.contracts.schemas import EARLIEST_TIMESTAMP, MAX_CLOCK_SKEW, EventBatch, EventMessage, SingleEvent
from shared.contracts.settings import get_settings
from shared.contracts.tables import User
from shared.contracts.topology import STORE_EVENTS
from shared.infra import counters
from shared.infra.cache import get_redis, key, reply
from shared.infra.db import session_scope
from shared.pipeline import visitors

events_bp = APIBlueprint("events", __name__, url_prefix="/api/events", abp_tags=[Tag(name="events")])

# Ids known to exist, so that most requests skip the query. An erasure anywhere writes a new
# random token to Redis, and every process empties its set when it sees the token change: an
# erased id is refused from the next request on, whichever API process gets it. Ids found by a
# query are added only if the token did not change while the query ran (it may have read the user
# just before the erasure committed). While Redis cannot be read nothing is remembered; if it
# could not be written at the erasure, the set is still emptied every KNOWN_USERS_SECONDS.
KNOWN_USERS_SECONDS = 60
_KNOWN_USERS_MAX = 1_000_000
_known_users: set[int] = set()


class _Known(TypedDict):  # the erasure token last seen, and since when (time.monotonic)
    token: bytes | None
    since: float


_known: _Known = {"token": None, "since": 0.0}
_known_lock = threading.Lock()


def _erasures_key() -> str:
    return key("erasures")


def forget_known_user(user_id: int) -> None:
    with _known_lock:
        _known_users.discard(user_id)
    try:
        get_redis().set(_erasures_key(), uuid.uuid4().hex)
    except redis.RedisError:
        pass  # the other processes forget within KNOWN_USERS_SECONDS; the worker stores nothing for the id


def _erasure_token() -> bytes | None:
    """The current token, after emptying the set if it moved (or is unknown, or too old)."""
    try:
        token: bytes | None = reply(get_redis().get(_erasures_key()))
    except redis.RedisError:
        token = b"unreadable"
    with _known_lock:
        if (token != _known["token"] or token == b"unreadable"
                or time.monotonic() - _known["since"] > KNOWN_USERS_SECONDS):
            _known_users.clear()
            _known["token"], _known["since"] = token, time.monotonic()
    return token


class EventAccepted(BaseModel):
    event_id: str


class BatchAccepted(BaseModel):
    accepted: int = Field(description="Distinct events taken in: an event is `(user_id, event_id)`")
    duplicates: int = Field(0, description="Identical copies of an earlier event of the same request, "
                            "collapsed into it (stored once, counted once)")
    event_ids: list[str] = Field(description="One id per event of the request, in its order")


@events_bp.before_request
def _limit_batch_size():
    if not (request.endpoint and request.is_json):
        return None
    payload = request.get_json(silent=True)
    if payload is not None and not isinstance(payload, dict):
        # flask-openapi3 validates a JSON *string* body by its contents: a batch sent as
        # "{\"events\": [...]}" would pass validation while skipping the size check below,
        # and be published in more chunks than one request may make. The contract says object.
        return problem_response(422, "The body must be a JSON object",
                                [FieldProblem(field="body", message="must be a JSON object")])
    if request.endpoint.endswith("batch"):
        limit = get_settings().events_batch_max
        if isinstance(payload, dict) and isinstance(payload.get("events"), list) and len(payload["events"]) > limit:
            return problem_response(413, f"A batch holds at most {limit} events; got {len(payload['events'])}")
    return None


def _field(events, index: int, name: str) -> str:
    """How a problem names an event's field: bare for the one event of POST /api/events."""
    single = len(events) == 1 and bool(request.endpoint) and str(request.endpoint).endswith("publish_event")
    return name if single else f"events[{index}].{name}"


def _check_users_exist(events) -> None:
    token = _erasure_token()
    with _known_lock:
        wanted = {e.user_id for e in events if e.user_id is not None} - _known_users
    if wanted:
        with session_scope() as session:
            found = set(session.scalars(select(User.id).where(User.id.in_(wanted))))
        if token != b"unreadable" and _erasure_token() == token:
            with _known_lock:
                if len(_known_users) < _KNOWN_USERS_MAX:
                    _known_users.update(found)
        missing = wanted - found
        if missing:
            errors = [
                FieldProblem(field=_field(events, i, "user_id"), message=f"no user with id {e.user_id}")
                for i, e in enumerate(events)
                if e.user_id in missing
            ]
            raise ProblemError(422, "Unknown user_id", errors)


def _publish(events: list[dict[str, Any]]) -> None:
    """Publish `EventMessage.wire` dicts in chunks, each a `StoreEventsMessage` (the worker
    validates it as one); the dicts go as they are, since a model per chunk would dump every
    event a second time."""
    celery = current_app.extensions["celery"]
    chunk = get_settings().events_chunk_size
    try:
        for start in range(0, len(events), chunk):
            celery.send_task(STORE_EVENTS, kwargs={"events": events[start : start + chunk]})
    except Exception as exc:
        raise ProblemError(
            503, f"The message broker is unavailable ({type(exc).__name__}); retry with the same event_ids"
        ) from exc


def _check_someone(events) -> None:
    """Every event names a person: a user, a visitor, or both (the document's anyOf)."""
    # Not "... is required": schemathesis reads such a message as "the field is required" and, the
    # document saying optional, could generate no batch at all (the contract test).
    errors = [FieldProblem(field=_field(events, i, "user_id"),
                           message="the event names neither a user (user_id) nor a visitor (anonymous_id)")
              for i, e in enumerate(events) if e.user_id is None and e.anonymous_id is None]
    if errors:
        raise ProblemError(422, "An event names its user_id, its anonymous_id or both", errors)


def _check_links(events) -> None:
    """An event with both ids links the visitor to the user (at store time, services.worker.storage):
    refused here when the anonymous id is linked to another user already, or claimed for two users
    in this request (no silent merge of two people). A link committed after this read is the
    worker's to see: it stores such an event as the given user's without linking."""
    both = [(i, e) for i, e in enumerate(events) if e.user_id is not None and e.anonymous_id is not None]
    if not both:
        return
    with session_scope() as session:
        linked = visitors.linked_to(session, [e.anonymous_id for _, e in both])
    claimed: dict[str, int] = {}
    errors = []
    for i, e in both:
        owner = linked.get(e.anonymous_id, claimed.setdefault(e.anonymous_id, e.user_id))
        if owner != e.user_id:
            errors.append(FieldProblem(field=_field(events, i, "anonymous_id"),
                                       message=f"anonymous id {e.anonymous_id!r} belongs to another user"))
    if errors:
        raise ProblemError(422, "An anonymous_id of another user", errors)


def _correct_clock(events, messages: list[dict[str, Any]], received_at: datetime,
                   sent_at: datetime | None) -> None:
    """Segment's and PostHog's rule: a client's clock is off by (its sent_at − our received_at),
    so each stated timestamp moves by received_at − sent_at; the stated one stays as
    `original_timestamp`. Then the skew bound, on the corrected instant: at most a day ahead of
    receipt (a client whose clock runs two days fast is corrected, not refused)."""
    errors = []
    for i, (event, message) in enumerate(zip(events, messages, strict=True)):
        if event.timestamp is None:
            continue  # dated received_at already
        moment = event.timestamp
        if sent_at is not None:
            try:
                moment = moment + (received_at - sent_at)
            except OverflowError:  # a sent_at and a timestamp millennia apart leave the calendar
                errors.append(FieldProblem(field=_field(events, i, "timestamp"),
                                           message="timestamp is too far from sent_at to be dated"))
                continue
            message["original_timestamp"] = event.timestamp.isoformat()
            message["timestamp"] = moment.isoformat()
        if moment > received_at + MAX_CLOCK_SKEW:
            errors.append(FieldProblem(field=_field(events, i, "timestamp"),
                                       message="timestamp is more than a day in the future"))
        elif moment < EARLIEST_TIMESTAMP:
            errors.append(FieldProblem(field=_field(events, i, "timestamp"), message="timestamp is before 1970-01-01"))
    if errors:
        raise ProblemError(422, "Invalid fields: timestamp", errors)


def _accept(events, sent_at: datetime | None = None,
            stated: Sequence[datetime | None] | None = None) -> tuple[list[dict[str, Any]], int]:
    """Publish the request's events; returns every event's message (`EventMessage.wire`), in
    request order, and how many copies were collapsed.

    An event is `(user_id, event_id)` (shared.contracts.event_identity), or `(anonymous_id,
    event_id)` for a visitor's event without a user. Copies of one event inside one
    request are decided here, before anything is stored: identical copies (a client re-sending
    from its own buffer) are the same event, published once and counted as duplicates; copies
    that differ in content are refused with a 422 naming both positions, since whichever one we
    kept would silently drop what the client meant by the other. `sent_at` (the batch's, by the
    client's clock) corrects every timestamp (`_correct_clock`). `stated`: for a caller that corrected
    the timestamps itself (Segment's /v1, whose sentAt may be each message's), each event's timestamp
    as the client stated it (None: not corrected), kept as `original_timestamp` as `sent_at` keeps it."""
    received_at = datetime.now(UTC)
    _check_someone(events)
    messages = [EventMessage.wire(e, e.event_id or uuid.uuid4().hex, received_at) for e in events]
    _correct_clock(events, messages, received_at, sent_at)
    for message, original in zip(messages, stated if stated is not None else [None] * len(messages), strict=True):
        if original is not None:
            # Before the copies are collapsed: their digest is of the stated time (a retry re-stamps
            # sentAt, and so moves the corrected one), shared.contracts.event_identity.content.
            message["original_timestamp"] = original.isoformat()
    unique, repeated, conflicts = event_identity.collapse(messages)
    if conflicts:
        raise ProblemError(422, "Conflicting copies of an event", [
            FieldProblem(field=f"events[{later}].event_id",
                         message=f"{_person(messages[later])}'s event {messages[later]['event_id']!r} is "
                                 f"also events[{first}], with different content: one id, one event")
            for first, later in conflicts
        ])
    _check_users_exist(events)
    _check_links(events)
    tracking_plan.check(messages, unique)  # refuses (422) or flags custom events that break the plan
    _publish(unique)
    if repeated:
        counters.add(**{counters.EVENTS_DUPLICATE: len(repeated)})
    return messages, len(repeated)


def _person(message: dict[str, Any]) -> str:
    if message.get("user_id") is not None:
        return f"user {message['user_id']}"
    return f"visitor {message['anonymous_id']!r}"


@events_bp.post(
    "",
    summary="Record one activity event",
    description="`user_purchase` needs `metadata.product_id`, a non-negative `metadata.price` and "
    "`metadata.category`. An event is identified by `(user_id, event_id)`: the same user's "
    "`event_id` sent again is a retry (the first copy is kept, the event is never stored or counted "
    "twice); another user's event with the same `event_id` is a different event. An event names "
    "`user_id`, `anonymous_id` (a visitor: `(anonymous_id, event_id)` until identified) or both "
    "(which links the visitor to the user; 422 naming `anonymous_id` when it is another user's).",
    responses={202: EventAccepted, 413: Problem, 422: Problem, 503: Problem},
)
def publish_event(body: SingleEvent):
    [message], _ = _accept([body.root])
    return {"event_id": message["event_id"]}, 202


@events_bp.post(
    "/batch",
    summary="Record many activity events (one RabbitMQ message per chunk)",
    description="At most EVENTS_BATCH_MAX (default 1000) events; a larger batch answers 413. "
    "Either every event is accepted or none is. An event is identified by `(user_id, event_id)`: "
    "identical copies of one event in the request are stored and counted once (`duplicates` says "
    "how many were collapsed); copies of one event with different content answer 422 naming "
    "`events[i].event_id` of each later copy. With `sent_at`, every timestamp is corrected by "
    "(time of receipt − `sent_at`) and the stated one kept as `original_timestamp`; the "
    "one-day-ahead bound applies to the corrected instant (422 naming `events[i].timestamp`).",
    responses={202: BatchAccepted, 413: Problem, 422: Problem, 503: Problem},
)
def publish_batch(body: EventBatch):
    messages, duplicates = _accept(body.events, body.sent_at)
    return {"accepted": len(messages) - duplicates, "duplicates": duplicates,
            "event_ids": [m["event_id"] for m in messages]}, 202
