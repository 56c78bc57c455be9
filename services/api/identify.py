"""Identify: a visitor (an `anonymous_id`) becomes a user's, and its history with it (issue 23).

`link` commits the link and an outbox row in one transaction (shared.pipeline.visitors); the outbox
relay publishes the merge, which moves the visitor's stored events to the user exactly once
(services.worker.merge). Repeating a link changes nothing; an anonymous id linked to another user
is a 409: two people are never merged silently. A user may have several anonymous ids (devices).
"""
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from services.api.problems import FieldProblem, Problem, ProblemError
from shared.contracts.schemas import AnonymousId, StrictModel
from shared.infra.db import session_scope
from shared.pipeline import visitors

identify_bp = APIBlueprint("identify", __name__, url_prefix="/api", abp_tags=[Tag(name="events")])


class IdentifyRequest(StrictModel):
    anonymous_id: AnonymousId = Field(description="The visitor, as its tracker names it (1–200 printable characters)")
    user_id: int = Field(gt=0, lt=2**31, strict=True)


class Identified(BaseModel):
    anonymous_id: str
    user_id: int
    linked: bool = Field(description="True when this call made the link; false when it existed already")


def link_in(session: Session, anonymous_id: str, user_id: int) -> bool:
    """`link` in the caller's transaction (the signup's): the same answers, nothing committed here."""
    try:
        return visitors.link(session, anonymous_id, user_id)
    except visitors.UnknownUser as exc:
        raise ProblemError(422, "Unknown user_id",
                           [FieldProblem(field="user_id", message=f"no user with id {user_id}")]) from exc
    except visitors.LinkConflict as exc:
        raise ProblemError(409, "The anonymous_id belongs to another user", [FieldProblem(
            field="anonymous_id", message=f"anonymous id {anonymous_id!r} is linked to another user")]) from exc


def link_unless_taken(session: Session, anonymous_id: str, user_id: int) -> bool:
    """The signup's link, in its transaction: False, and nothing written, when the anonymous id is
    another user's. A signup is not refused for it: the id is usually a browser's cookie, and a
    second person signing up in a browser where someone else was identified (a shared computer)
    must still get an account; their new history starts without the other person's visits. Two
    people are still never merged: the visitor stays its first user's."""
    try:
        visitors.link(session, anonymous_id, user_id)  # only a lock was taken when it raises
    except visitors.LinkConflict:
        return False
    return True


def link(anonymous_id: str, user_id: int) -> bool:
    """Link the visitor to the user: True when this made the link, False when the same link existed.
    Raises ProblemError 409 when the anonymous id belongs to another user, 422 when the user does
    not exist. The link and its merge's outbox row commit together."""
    with session_scope() as session:
        return link_in(session, anonymous_id, user_id)


@identify_bp.post(
    "/identify",
    summary="Link an anonymous visitor to a user",
    description="The visitor's events, stored and later, become the user's: profile, counters, summaries, "
    "segment and recommendations are what they would be had every event carried the `user_id` (a guest "
    "purchase becomes the customer's first purchase). Repeating it answers 200 and changes nothing; an "
    "`anonymous_id` linked to another user answers 409. A user may have several anonymous ids.",
    responses={200: Identified, 409: Problem, 422: Problem},
)
def identify(body: IdentifyRequest):
    linked = link(body.anonymous_id, body.user_id)
    return {"anonymous_id": body.anonymous_id, "user_id": body.user_id, "linked": linked}, 200
