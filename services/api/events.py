"""Activity events: validated here, published in chunks, stored by the worker.

202 means every event is in RabbitMQ (publisher confirms). When the broker is down the answer
is 503 and the client retries: with its own `event_id`s a retry can never duplicate an event.
"""
import uuid
from datetime import UTC, datetime

from flask import current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel
from sqlalchemy import select

from services.api.problems import ProblemError, problem_response
from shared.db import session_scope
from shared.models import User
from shared.schemas import EventBatch, FieldProblem, Problem, SingleEvent, event_document
from shared.settings import get_settings
from shared.topology import STORE_EVENTS

events_bp = APIBlueprint("events", __name__, url_prefix="/api/events", abp_tags=[Tag(name="events")])

# Users are never deleted, so an id once seen stays valid for the life of the process.
_known_users: set[int] = set()
_KNOWN_USERS_MAX = 1_000_000


class EventAccepted(BaseModel):
    event_id: str


class BatchAccepted(BaseModel):
    accepted: int
    event_ids: list[str]


@events_bp.before_request
def _limit_batch_size():
    if request.endpoint and request.endpoint.endswith("batch") and request.is_json:
        payload = request.get_json(silent=True)
        limit = get_settings().events_batch_max
        if isinstance(payload, dict) and isinstance(payload.get("events"), list) and len(payload["events"]) > limit:
            return problem_response(413, f"A batch holds at most {limit} events; got {len(payload['events'])}")
    return None


def _check_users_exist(events) -> None:
    wanted = {e.user_id for e in events} - _known_users
    if wanted:
        with session_scope() as session:
            found = set(session.scalars(select(User.id).where(User.id.in_(wanted))))
        if len(_known_users) < _KNOWN_USERS_MAX:
            _known_users.update(found)
        missing = wanted - found
        if missing:
            single = len(events) == 1 and request.endpoint.endswith("publish_event")
            errors = [
                FieldProblem(field="user_id" if single else f"events[{i}].user_id", message=f"no user with id {e.user_id}")
                for i, e in enumerate(events)
                if e.user_id in missing
            ]
            raise ProblemError(422, "Unknown user_id", errors)


def _publish(documents: list[dict]) -> None:
    celery = current_app.extensions["celery"]
    chunk = get_settings().events_chunk_size
    try:
        for start in range(0, len(documents), chunk):
            celery.send_task(STORE_EVENTS, kwargs={"events": documents[start : start + chunk]})
    except Exception as exc:
        raise ProblemError(
            503, f"The message broker is unavailable ({type(exc).__name__}); retry with the same event_ids"
        ) from exc


def _accept(events) -> list[dict]:
    _check_users_exist(events)
    received_at = datetime.now(UTC)
    documents = [event_document(e, e.event_id or uuid.uuid4().hex, received_at) for e in events]
    _publish(documents)
    return documents


@events_bp.post(
    "",
    summary="Record one activity event",
    description="`user_purchase` needs `metadata.product_id`, a non-negative `metadata.price` and "
    "`metadata.category`. Re-sending an `event_id` never stores the event twice.",
    responses={202: EventAccepted, 413: Problem, 422: Problem, 503: Problem},
)
def publish_event(body: SingleEvent):
    [document] = _accept([body.root])
    return {"event_id": document["event_id"]}, 202


@events_bp.post(
    "/batch",
    summary="Record many activity events (one RabbitMQ message per chunk)",
    description="At most EVENTS_BATCH_MAX (default 1000) events; a larger batch answers 413. "
    "Either every event is accepted or none is.",
    responses={202: BatchAccepted, 413: Problem, 422: Problem, 503: Problem},
)
def publish_batch(body: EventBatch):
    documents = _accept(body.events)
    return {"accepted": len(documents), "event_ids": [d["event_id"] for d in documents]}, 202
