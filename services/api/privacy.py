"""A person's data: erase it everywhere, or export it as one document (both admin)."""
from typing import Any

import redis
from flask_openapi3 import APIBlueprint, Tag
from psycopg.errors import DeadlockDetected
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError

from services.api.events import forget_known_user
from services.api.problems import Problem, ProblemError
from services.api.users import UserPath
from shared.contracts.users import UserOut
from shared.infra.db import session_scope
from shared.infra.logging import get_logger
from shared.infra.mongo import get_database
from shared.pipeline import data_version, erasure

log = get_logger(__name__)
# The erasure locks the user's row, then (cascading) rows a worker storing that user's events may
# hold while it waits for the user's row: Postgres breaks such a deadlock by aborting one side,
# and the side that lost simply runs again.
DEADLOCK_ATTEMPTS = 3
privacy_bp = APIBlueprint("privacy", __name__, url_prefix="/api/users", abp_tags=[Tag(name="privacy")])


class ErasureAccepted(BaseModel):
    user_id: int
    detail: str


class UserExport(BaseModel):
    exported_at: str
    user: UserOut
    anonymous_ids: list[str] = Field(description="The visitors (devices) linked to the user by identify")
    profile: dict[str, Any] | None = Field(description="The stored profile document")
    events: list[dict[str, Any]] = Field(description="Every stored event, oldest first")
    activity_days: list[dict[str, Any]] = Field(description="Events per UTC day")
    purchase_days: list[dict[str, Any]] = Field(description="Purchases and spend per UTC day")
    purchase_summary: dict[str, Any] | None = Field(description="What the models read about the customer")
    categories: list[dict[str, Any]] = Field(description="Purchases and spend per category")
    welcome_email: dict[str, Any] | None = Field(description="When the welcome e-mail went out, and to whom")


@privacy_bp.delete(
    "/<int:user_id>",
    summary="Erase a person everywhere (admin)",
    description="Deletes the user, address, counters, summaries and outbox messages in Postgres at once, "
    "then (durably, through the outbox) every event, the profile document and the welcome-e-mail record "
    "in MongoDB and the cached profile in Redis. Events sent for the id afterwards are refused (422). "
    "A second DELETE answers 404: no trace of the id is kept.",
    responses={202: ErasureAccepted, 404: Problem},
)
def erase_user(path: UserPath):
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            with session_scope() as session:
                if not erasure.erase_in_postgres(session, path.user_id):
                    raise ProblemError(404, f"No user with id {path.user_id}")
            break
        except OperationalError as exc:
            if not isinstance(exc.orig, DeadlockDetected) or attempt == DEADLOCK_ATTEMPTS:
                raise
    forget_known_user(path.user_id)
    # The person's person_events went with that commit: insight answers cached before are stale.
    data_version.changed("erasure")
    try:
        # At once, so that no cached profile is served after this answer; the worker repeats it.
        erasure.forget_in_redis([path.user_id])
    except redis.RedisError as exc:
        log.warning("erasure_cache_later", user_id=path.user_id, error=type(exc).__name__)
    return {"user_id": path.user_id,
            "detail": "Erased from Postgres; MongoDB and Redis follow within seconds"}, 202


@privacy_bp.get(
    "/<int:user_id>/export",
    summary="Everything Pulse holds about a person, as one JSON document (admin and personal)",
    description="All of a person's data, their name, e-mail and street included: the key needs the `personal` "
    "scope as well as `admin`. Sent with `Cache-Control: no-store`.",
    responses={200: UserExport, 404: Problem},
)
def export_user(path: UserPath):
    with session_scope() as session:
        document = erasure.export(get_database(), session, path.user_id)
    if document is None:
        raise ProblemError(404, f"No user with id {path.user_id}")
    return document, 200, {"Cache-Control": "no-store"}
