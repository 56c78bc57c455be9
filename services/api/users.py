"""Users: signup (with its outbox message) and reads with eager-loaded addresses."""
import time
import uuid
from typing import Any

from flask import Response, g
from flask_openapi3 import APIBlueprint, Tag
from psycopg.errors import UniqueViolation
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager

from services.api import identify
from services.api.insights import members_bounded
from services.api.problems import FieldProblem, Problem, ProblemError
from services.api.profile_docs import PROFILE_DOC, ProfileOut
from shared.analytics.insights import cohorts
from shared.analytics.profiles import LAST_PHASES, compute_profiles
from shared.contracts import personal
from shared.contracts.schemas import Printable, SignupRequest, UserCreatedMessage
from shared.contracts.tables import Address, City, Country, OutboxMessage, PurchaseDay, User
from shared.contracts.topology import USER_CREATED
from shared.contracts.users import UserOut, with_address
from shared.infra import request_ids, tracing
from shared.infra.db import session_scope
from shared.infra.mongo import get_database
from shared.pipeline import data_version, profile_cache
from shared.pipeline.reference import country_by_code, resolve_city

users_bp = APIBlueprint("users", __name__, url_prefix="/api/users", abp_tags=[Tag(name="users")])


class SignupCreated(BaseModel):
    id: int
    username: str
    email: str
    anonymous_id_linked: bool | None = Field(
        None, description="Only with `anonymous_id`: true when the visitor's history became this user's; "
        "false when the anonymous id is another user's (the account is created; the visitor stays theirs)")


class UserPath(BaseModel):
    user_id: int = Field(gt=0, lt=2**31)


def sees_personal() -> bool:
    """Whether this request's key may see who people are (the personal scope, shared.contracts.personal)."""
    principal = g.get("principal")
    return principal is not None and personal.may_see(principal.scopes)


def _people(users: list[dict[str, Any]], shown: bool) -> list[dict[str, Any]]:
    return users if shown else [personal.pseudonymous(user) for user in users]


def _privacy_headers(shown: bool) -> dict[str, str]:
    # An answer naming people is kept by no cache, a browser's included.
    return dict(personal.NO_STORE) if shown else {}


PERSONAL_READ = ("Without the `personal` scope people are pseudonymous: username, email, full_name and "
                 "address.street are absent. With it they are present and the answer carries "
                 "`Cache-Control: no-store`.")


PERSONAL_PROFILE = ("Without the `personal` scope the profile's user is pseudonymous: user.username, user.email, "
                    "user.full_name and user.address.street are absent. With it they are present and the answer "
                    "carries `Cache-Control: no-store`.")


def _taken_fields(session: Session, username: str, email: str) -> list[FieldProblem]:
    rows = session.execute(
        select(User.username, User.email).where(
            or_(func.lower(User.username) == username.lower(), User.email == email)
        )
    ).all()
    problems = []
    if any(row.username.lower() == username.lower() for row in rows):
        problems.append(FieldProblem(field="username", message="username is already taken"))
    if any(row.email == email for row in rows):
        problems.append(FieldProblem(field="email", message="email is already registered"))
    return problems


def _conflict(problems: list[FieldProblem]) -> ProblemError:
    return ProblemError(409, "A user with this " + " and ".join(p.field for p in problems) + " exists", problems)


def register_user(session: Session, body: SignupRequest) -> tuple[User, bool | None]:
    """Write user, address (city, country) and the `user.created` outbox row in one transaction."""
    country = country_by_code(body.address.country_code)
    if country is None:
        raise ProblemError(
            422,
            "Invalid fields: address.country_code",
            [FieldProblem(field="address.country_code", message="not an ISO 3166-1 alpha-2 country code")],
        )
    if taken := _taken_fields(session, body.username, body.email):
        raise _conflict(taken)

    city_id = resolve_city(session, body.address.city, country[0])
    address = Address(street=body.address.street, city_id=city_id)
    user = User(username=body.username, email=body.email, full_name=body.full_name, address=address)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        # The pre-check lost a race with a concurrent signup: the constraint decides, still a 409.
        session.rollback()
        if isinstance(exc.orig, UniqueViolation):
            constraint = exc.orig.diag.constraint_name or ""
            field = "email" if "email" in constraint else "username"
            raise _conflict([FieldProblem(field=field, message=f"{field} is already taken")]) from exc
        raise

    outbox_id = uuid.uuid4()
    message = UserCreatedMessage(
        event_id=str(outbox_id),
        user_id=user.id,
        username=user.username,
        email=user.email,
        full_name=user.full_name,
        city=body.address.city,
        country_code=body.address.country_code,
        created_at=session.scalar(select(func.now())),
    )
    with tracing.outbox_write(USER_CREATED) as traceparent:  # the relay continues this trace
        session.add(OutboxMessage(id=outbox_id, task_name=USER_CREATED, payload=message.model_dump(mode="json"),
                                  request_id=request_ids.current(), traceparent=traceparent))
    linked = None
    if body.anonymous_id is not None:
        # In this transaction: the visitor's history and the account commit together.
        linked = identify.link_unless_taken(session, body.anonymous_id, user.id)
    return user, linked


@users_bp.post(
    "/signup",
    summary="Register a user",
    description="Stores the user with address, city and country, and queues `user.created` in the "
    "same transaction (transactional outbox). Answers at once; the welcome e-mail and the profile "
    "follow asynchronously. With `anonymous_id`, the visitor is linked to the new user in the same "
    "transaction (its events become the user's); when it is another user's, the account is still created, "
    "unlinked (`anonymous_id_linked`: false).",
    responses={201: SignupCreated, 409: Problem, 422: Problem},
)
def signup(body: SignupRequest):
    with session_scope() as session:
        user, linked = register_user(session, body)
        created = SignupCreated(id=user.id, username=user.username, email=user.email, anonymous_id_linked=linked)
    # Committed: retention by signup counts users by created_at, so answers cached before are stale.
    data_version.changed("signup")
    return created.model_dump(exclude_none=True), 201, {"Location": f"/api/users/{created.id}"}


@users_bp.get(
    "/<int:user_id>",
    summary="A user with address, city and country (one SQL query)",
    description=PERSONAL_READ,
    responses={200: UserOut, 404: Problem},
)
def get_user(path: UserPath):
    with session_scope() as session:
        user = session.scalar(select(User).options(with_address()).where(User.id == path.user_id))
        if user is None:
            raise ProblemError(404, f"No user with id {path.user_id}")
        shown = sees_personal()
        return _people([UserOut.of(user).model_dump(mode="json")], shown)[0], 200, _privacy_headers(shown)


class UserListQuery(BaseModel):
    country: str | None = Field(None, description="ISO code, e.g. UA", pattern=r"^[A-Za-z]{2}$")
    city: Printable | None = Field(None, max_length=100)
    cohort: str | None = Field(None, pattern=r"^[a-z][a-z0-9_-]{0,63}$",
                               description="A saved cohort (PUT /api/cohorts/<name>): its users only")
    page: int = Field(1, ge=1, le=1_000_000)
    per_page: int = Field(50, ge=1, le=500)


class UserPage(BaseModel):
    items: list[UserOut]
    page: int
    per_page: int
    total: int


class PurchaseDayOut(BaseModel):
    day: str = Field(description="UTC day, YYYY-MM-DD")
    purchases: int
    spent: float


class PurchaseTimeline(BaseModel):
    user_id: int
    items: list[PurchaseDayOut] = Field(description="Days with a purchase, oldest first")


class TopQuery(BaseModel):
    min_score: float = Field(80, ge=0, le=100)
    limit: int = Field(10, ge=1, le=100)


@users_bp.get(
    "",
    summary="Users by country and city, with their addresses (one SQL query per page)",
    description=PERSONAL_READ + " `cohort`: a saved cohort's users (its visitors are no users); 404 naming "
    "`cohort` when no such cohort is saved; 503 (Retry-After) when evaluating its members takes longer than "
    "INSIGHT_INLINE_TIMEOUT_MS.",
    responses={200: UserPage, 404: Problem, 422: Problem},
)
def list_users(query: UserListQuery):
    # Joined for the filter and eager-loaded from the same join; the total rides along as a
    # window function, so a page is exactly one statement whatever its size.
    statement = (
        select(User, func.count().over().label("total"))
        .join(User.address)
        .join(Address.city)
        .join(City.country)
        .options(contains_eager(User.address).contains_eager(Address.city).contains_eager(City.country))
        .order_by(User.id)
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
    )
    if query.country:
        statement = statement.where(Country.code == query.country.upper())
    if query.city:
        statement = statement.where(func.lower(City.name) == query.city.strip().lower())
    # A saved cohort's members are an insight query: under its time limit (members_bounded).
    with members_bounded() if query.cohort else session_scope() as session:
        if query.cohort:
            try:
                members, params = cohorts.members_of(session, query.cohort, "cohort")
            except cohorts.UnknownCohort as exc:
                raise ProblemError(404, str(exc), [FieldProblem(field="cohort", message=str(exc))]) from exc
            statement = statement.where(text(f"users.id IN ({members})").bindparams(**params))
        rows = session.execute(statement).all()
        items = [UserOut.of(row.User).model_dump(mode="json") for row in rows]
    total = rows[0].total if rows else 0
    shown = sees_personal()
    return ({"items": _people(items, shown), "page": query.page, "per_page": query.per_page, "total": total},
            200, _privacy_headers(shown))


@users_bp.get(
    "/top",
    summary="Top users by profile score (the guide's `profile_score > 80`)",
    description=PERSONAL_READ,
    responses={200: UserPage, 422: Problem},
)
def top_users(query: TopQuery):
    with session_scope() as session:
        users = session.scalars(
            select(User)
            .options(with_address())
            .where(User.profile_score > query.min_score)
            .order_by(User.profile_score.desc(), User.id)
            .limit(query.limit)
        ).all()
        items = [UserOut.of(u).model_dump(mode="json") for u in users]
    shown = sees_personal()
    return ({"items": _people(items, shown), "page": 1, "per_page": query.limit, "total": len(items)},
            200, _privacy_headers(shown))


@users_bp.get(
    "/<int:user_id>/profile",
    summary="The user's analytics profile (cache-aside in Redis; header X-Cache: HIT|MISS, "
    "BYPASS while Redis is unreachable)",
    description=PROFILE_DOC + "\n" + PERSONAL_PROFILE,
    responses={200: ProfileOut, 404: Problem},
)
def get_profile(path: UserPath):
    started = time.perf_counter()
    LAST_PHASES.set(None)  # this thread's previous request must not lend us its timings

    def compute():
        with session_scope() as session:
            return compute_profiles(get_database(), session, [path.user_id]).get(path.user_id)

    body, cache = profile_cache.get_or_compute(path.user_id, compute)
    if body is None:
        raise ProblemError(404, f"No user with id {path.user_id}")
    shown = sees_personal()
    body = personal.profile_view(body, shown)
    headers = {"X-Cache": cache, **_privacy_headers(shown)}
    phases = LAST_PHASES.get()
    if cache != profile_cache.HIT and phases:
        # Where a computed profile spent its time (W3C Server-Timing): each store read, the scoring,
        # and the view as a whole (the rest is the cache's round trips).
        phases = {**phases, "view": round((time.perf_counter() - started) * 1000, 2)}
        headers["Server-Timing"] = ", ".join(f"{name};dur={ms}" for name, ms in phases.items())
    return Response(body, status=200, mimetype="application/json", headers=headers)


@users_bp.get(
    "/<int:user_id>/purchases",
    summary="The user's purchase timeline: purchases and spend per day (the dashboard's user page)",
    description="Read from the per-customer purchase days the worker keeps (one indexed range read), "
    "not from the event log. Empty for a user who has bought nothing.",
    responses={200: PurchaseTimeline, 404: Problem},
)
def purchase_timeline(path: UserPath):
    with session_scope() as session:
        if session.get(User, path.user_id) is None:
            raise ProblemError(404, f"No user with id {path.user_id}")
        rows = session.execute(
            select(PurchaseDay.day, PurchaseDay.purchases, PurchaseDay.spent)
            .where(PurchaseDay.user_id == path.user_id).order_by(PurchaseDay.day)
        ).all()
    return {"user_id": path.user_id, "items": [
        {"day": row.day.isoformat(), "purchases": row.purchases, "spent": round(float(row.spent), 2)} for row in rows]}
