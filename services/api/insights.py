"""Insight endpoints (issue 24): funnels, retention, lifecycle and saved cohorts.

The queries are shared.analytics.insights: SQL over person_events through its indexes. Each answer
is cached per (query, saved cohort definition, data version) in Redis (`X-Cache`). A query is
computed here under a Postgres statement_timeout of INSIGHT_INLINE_TIMEOUT_MS; one that needs
longer is cancelled and handed to the analytics worker as a job (202 with
`Location: /api/analytics/jobs/<id>`), as is every query sent with `Prefer: respond-async`
(RFC 7240), so no web thread is held by a long query.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from flask import request
from flask_openapi3 import APIBlueprint, Tag
from psycopg.errors import QueryCanceled
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
)
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from services.api.analytics import JobOut, submit_job
from services.api.problems import FieldProblem, Problem, ProblemError
from shared.analytics import insights
from shared.analytics.insights import cohorts, funnels, lifecycle, periods, retention
from shared.contracts.schemas import Printable, iso_text
from shared.contracts.settings import get_settings
from shared.contracts.tables import Cohort
from shared.contracts.topology import RUN_INSIGHT
from shared.infra.db import session_scope
from shared.pipeline import reference

insights_bp = APIBlueprint("insights", __name__, url_prefix="/api", abp_tags=[Tag(name="insights")])

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
COHORT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
# A `where` key is a metadata key as a custom event may carry it (shared.contracts.schemas), control
# characters excluded (they would reach Postgres).
WHERE_KEY_PATTERN = r"^[^$.\x00-\x1f\x7f][^.\x00-\x1f\x7f]{0,63}$"
# Dates outside these years are nobody's events, and far ends would overflow the period arithmetic.
EARLIEST, LATEST = date(1970, 1, 1), date(2999, 12, 31)
MAX_WHERE_KEYS = 20



def _encodable(value: str) -> str:
    # A JSON "\udfff" escape is a lone surrogate: no UTF-8 (and no jsonb) can hold it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


EventType = Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN)]
CohortName = Annotated[str, StringConstraints(pattern=COHORT_NAME_PATTERN)]
WhereKey = Annotated[str, StringConstraints(pattern=WHERE_KEY_PATTERN), AfterValidator(_encodable)]
WhereText = Annotated[Printable, StringConstraints(max_length=200), AfterValidator(_encodable)]
WhereNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]
WhereInt = Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)]
WhereValue = StrictBool | WhereInt | WhereNumber | WhereText


def _in_years(value: Any, field: str) -> Any:
    moment = value.date() if isinstance(value, datetime) else value
    if isinstance(moment, date) and not EARLIEST <= moment <= LATEST:
        raise ValueError(f"{field} must be between {EARLIEST} and {LATEST}")
    return value


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: EventType
    where: dict[WhereKey, WhereValue] = Field(
        default_factory=dict, max_length=MAX_WHERE_KEYS,
        description="Metadata entries the event must have, by equality (an int and a float of the same "
        "value are equal; a string is at most 200 characters)")


class FunnelBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[StepIn] = Field(min_length=2, max_length=10)
    window_seconds: int = Field(ge=1, le=31_536_000, strict=True)
    from_: AwareDatetime = Field(alias="from", description="ISO 8601 with offset; entries from this moment on")
    to: AwareDatetime = Field(description="ISO 8601 with offset; entries before this moment")

    _text = field_validator("from_", "to", mode="before")(lambda value, info: iso_text(value, info.field_name))
    _years = field_validator("from_", "to")(lambda value, info: _in_years(value, info.field_name))

    @field_validator("to")
    @classmethod
    def _after_from(cls, value: datetime, info) -> datetime:
        start = info.data.get("from_")
        if start is not None and value <= start:
            raise ValueError("to must be after from")
        return value

    def query(self, breakdown: str | None = None, cohort: str | None = None) -> funnels.FunnelQuery:
        return funnels.FunnelQuery(
            steps=[funnels.FunnelStep(s.event_type, dict(s.where)) for s in self.steps],
            window_seconds=self.window_seconds, start=self.from_.astimezone(UTC), end=self.to.astimezone(UTC),
            breakdown=breakdown, cohort=cohort)


class FunnelRequest(FunnelBase):
    breakdown: Literal["country", "segment", "signup_week"] | None = None
    cohort: CohortName | None = Field(None, description="A saved cohort: only its members enter")


class FunnelStepOut(BaseModel):
    event_type: str
    persons: int
    conversion_from_previous: float | None
    conversion_from_first: float | None
    median_seconds_to_convert: float | None


class FunnelOut(BaseModel):
    steps: list[FunnelStepOut]
    breakdown: dict[str, list[FunnelStepOut]] | None = Field(
        description="Per country code, segment or signup week (Monday); `(none)` for persons without one")


class RetentionQueryIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    cohort: Literal["signup", "first_event"]
    period: Literal["day", "week", "month"]
    periods: int = Field(ge=1, le=periods.MAX_PERIODS[periods.DAY],
                         description="Periods per cohort (0 is its own): at most 400 days, 104 weeks, 36 months")
    event_type: EventType | None = None
    from_: date | None = Field(None, alias="from", description="First cohort period: the one holding this day")
    to: date | None = Field(None, description="Cohort periods start before this day")
    in_cohort: CohortName | None = Field(None, description="A saved cohort: only its members are counted")

    _years = field_validator("from_", "to")(lambda value, info: _in_years(value, info.field_name))


class RetentionCohortOut(BaseModel):
    cohort: str = Field(description="The cohort's period start, YYYY-MM-DD")
    size: int
    active: list[int] = Field(description="Persons active per period 0.. that has begun (active[0] = size)")
    rates: list[float]


class RetentionOut(BaseModel):
    period: str
    cohort_type: str
    event_type: str | None
    cohorts: list[RetentionCohortOut]


class LifecycleQueryIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    period: Literal["day", "week", "month"]
    from_: date = Field(alias="from", description="The first period is the one holding this day")
    to: date = Field(description="Periods start before this day")
    event_type: EventType | None = None
    in_cohort: CohortName | None = None

    _years = field_validator("from_", "to")(lambda value, info: _in_years(value, info.field_name))


class LifecyclePeriodOut(BaseModel):
    period: str
    new: int
    returning: int
    resurrecting: int
    dormant: int = Field(description="Persons active the previous period and not this one, negative")


class LifecycleOut(BaseModel):
    period: str
    periods: list[LifecyclePeriodOut]


class ReachedStepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    funnel: FunnelBase
    step: int = Field(ge=1, le=10, strict=True)

    @field_validator("step")
    @classmethod
    def _a_step_of_the_funnel(cls, value: int, info) -> int:
        funnel = info.data.get("funnel")
        if funnel is not None and value > len(funnel.steps):
            raise ValueError("step must be a step of the funnel")
        return value


class RecentEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: EventType
    days: int = Field(ge=1, le=3650, strict=True)


class CohortDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z_]{0,15}$")] | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = Field(
        None, description="ISO 3166-1 alpha-2 code of the user's address")
    rfm_code: Annotated[str, StringConstraints(pattern=r"^[1-5x]{3}$")] | None = Field(
        None, description="Recency, frequency, monetary scores 1-5, `x` for any (e.g. 5x5)")
    reached_step: ReachedStepIn | None = None
    event_in_last_days: RecentEventIn | None = None


class CohortPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: CohortDefinition


class CohortOut(BaseModel):
    name: str
    definition: dict[str, Any]
    persons: int = Field(description="Members now")
    created_at: str
    updated_at: str


class CohortsOut(BaseModel):
    items: list[CohortOut]


class CohortPath(BaseModel):
    # Checked before any query: a path segment may hold anything, a NUL included.
    name: CohortName


def _problem(status: int, field: str, message: str) -> ProblemError:
    return ProblemError(status, f"Invalid fields: {field}" if status == 422 else message,
                        [FieldProblem(field=field, message=message)])


def _check_span(first: date, end: date, period: str, field: str) -> None:
    if end <= first:
        raise _problem(422, field, "to must be after from")
    if len(periods.starts(first, end, period)) > periods.MAX_PERIODS[period]:
        raise _problem(422, field, f"at most {periods.MAX_PERIODS[period]} {period}s from from to to")


def limit_to_inline(session: Session) -> None:
    """INSIGHT_INLINE_TIMEOUT_MS as the statement_timeout of this transaction only: the pooled
    connection goes back without a time limit."""
    session.execute(text("SELECT set_config('statement_timeout', :ms, true)"),
                    {"ms": str(get_settings().insight_inline_timeout_ms)})


@contextmanager
def members_bounded() -> Iterator[Session]:
    """A transaction that evaluates saved cohorts' members (GET /api/cohorts, /api/users?cohort=):
    as costly as a funnel (reached_step), so under the same limit. Past it, a 503 problem with
    Retry-After, rather than a web thread held for as long as the count takes."""
    try:
        with session_scope() as session:
            limit_to_inline(session)
            yield session
    except OperationalError as exc:
        if not isinstance(exc.orig, QueryCanceled):
            raise
        raise ProblemError(503, "Evaluating the saved cohort's members took longer than "
                           "INSIGHT_INLINE_TIMEOUT_MS; retry later") from exc


def _run(kind: str, params: dict[str, Any]):
    """The answer now (200, X-Cache) or, past INSIGHT_INLINE_TIMEOUT_MS or when asked to
    (`Prefer: respond-async`), a job (202 + Location)."""
    field = insights.COHORT_FIELD[kind]
    asynchronous = "respond-async" in request.headers.get("Prefer", "").lower()
    try:
        with session_scope() as session:
            if asynchronous:
                insights.cache_key(session, kind, params, 0)  # an unknown cohort is a 404 now, not a failed job
            else:
                limit_to_inline(session)
                try:
                    body, cache = insights.answer(session, kind, params)
                except OperationalError as exc:
                    if not isinstance(exc.orig, QueryCanceled):
                        raise
                    session.rollback()
                    asynchronous = True
    except cohorts.UnknownCohort as exc:
        raise _problem(404, field, str(exc)) from exc
    if asynchronous:
        return submit_job(kind, RUN_INSIGHT, params)
    return body, 200, {"X-Cache": cache}


ASYNC_DOC = ("Computed under a Postgres statement_timeout of INSIGHT_INLINE_TIMEOUT_MS (default 5 s); a query that "
             "needs longer, or one sent with `Prefer: respond-async`, runs as a job: 202 with "
             "`Location: /api/analytics/jobs/<id>`, whose `result` is this answer when done. Answers are cached per "
             "query, saved cohort definition and data version (`X-Cache: HIT|MISS`, or BYPASS while Redis is "
             "unreachable); see docs/insights.md.")


@insights_bp.post(
    "/analytics/funnels",
    summary="A funnel: persons per step, conversion, median time to convert, optionally broken down",
    description="A person (user, or visitor not yet identified) enters at their first step-1 event matching its "
    "`where` with from <= at < to; step k counts at the earliest matching event after step k-1's and no later "
    "than entry + window_seconds. " + ASYNC_DOC,
    responses={200: FunnelOut, 202: JobOut, 404: Problem, 422: Problem},
)
def funnels_view(body: FunnelRequest):
    return _run(insights.FUNNEL, funnels.to_params(body.query(body.breakdown, body.cohort)))


@insights_bp.get(
    "/analytics/retention",
    summary="Retention: the cohort x period matrix (a triangle: periods that have not begun are absent)",
    description="`cohort=signup`: users by the period they signed up in, active = an event (of `event_type`, "
    "else any) in a later period; `cohort=first_event`: persons by the period of their first `event_type` event "
    "(required), active = an event of that type. Weeks start on Monday, UTC; months on the 1st. Without "
    "from/to: the `periods` cohorts up to today's. " + ASYNC_DOC,
    responses={200: RetentionOut, 202: JobOut, 404: Problem, 422: Problem},
)
def retention_view(query: RetentionQueryIn):
    if query.periods > periods.MAX_PERIODS[query.period]:
        raise _problem(422, "periods", f"at most {periods.MAX_PERIODS[query.period]} for period={query.period}")
    if query.cohort == retention.FIRST_EVENT and query.event_type is None:
        raise _problem(422, "event_type", "cohort=first_event needs an event_type")
    resolved = retention.resolved(retention.RetentionQuery(
        query.cohort, query.period, query.periods, query.event_type, query.from_, query.to, query.in_cohort))
    assert resolved.start is not None and resolved.end is not None
    _check_span(resolved.start, resolved.end, query.period, "to" if query.to is not None else "from")
    return _run(insights.RETENTION, retention.to_params(resolved))


@insights_bp.get(
    "/analytics/lifecycle",
    summary="Lifecycle: new, returning, resurrecting and dormant (negative) persons per period",
    description="PostHog's definitions: new = the person's first active period ever (of `event_type` when given); "
    "returning = active this and the previous period; resurrecting = active now, not the previous period, not "
    "new; dormant = active the previous period and not this one. " + ASYNC_DOC,
    responses={200: LifecycleOut, 202: JobOut, 404: Problem, 422: Problem},
)
def lifecycle_view(query: LifecycleQueryIn):
    _check_span(query.from_, query.to, query.period, "to")
    return _run(insights.LIFECYCLE, lifecycle.to_params(
        lifecycle.LifecycleQuery(query.period, query.from_, query.to, query.event_type, query.in_cohort)))


def _described(session: Session, cohort: Cohort) -> dict[str, Any]:
    return {"name": cohort.name, "definition": cohort.definition, "persons": cohorts.count(session, cohort.definition),
            "created_at": cohort.created_at.isoformat(), "updated_at": cohort.updated_at.isoformat()}


@insights_bp.put(
    "/cohorts/<name>",
    summary="Save a cohort (created: 201, replaced: 200)",
    description="Body `{\"definition\": {...}}`, every filter given ANDed: `segment`, `country` (ISO alpha-2), "
    "`rfm_code` (e.g. `545`, `5x5`), `reached_step` (`{\"funnel\": <funnel body without breakdown/cohort>, "
    "\"step\": k}`), `event_in_last_days` (`{\"event_type\", \"days\"}`); at least one. Members are evaluated when "
    "a query uses the cohort, so they are always today's.",
    responses={200: CohortOut, 201: CohortOut, 422: Problem},
)
def put_cohort(path: CohortPath, body: CohortPut):
    name = path.name
    definition = body.definition.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not definition:
        raise _problem(422, "definition", "a definition needs at least one filter")
    if "country" in definition and reference.country_by_code(definition["country"]) is None:
        raise _problem(422, "definition.country", "not an ISO 3166-1 alpha-2 country code")
    with session_scope() as session:
        # One statement: two PUTs of a new name at once both succeed, the later one's definition stays.
        created = session.execute(text(
            "INSERT INTO cohorts (name, definition) VALUES (:name, CAST(:definition AS jsonb)) "
            "ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now() "
            "RETURNING (xmax = 0) AS created"),
            {"name": name, "definition": json.dumps(definition)}).scalar_one()
        cohort = session.get(Cohort, name, populate_existing=True)
        assert cohort is not None  # written just above, in this transaction
        answer = _described(session, cohort)
    return answer, 201 if created else 200, {"Location": f"/api/cohorts/{name}"}


MEMBERS_DOC = ("Members are counted under the insight queries' time limit: 503 (Retry-After) when that takes longer "
               "than INSIGHT_INLINE_TIMEOUT_MS.")


@insights_bp.get("/cohorts", summary="Every saved cohort with its member count now", description=MEMBERS_DOC,
                 responses={200: CohortsOut})
def list_cohorts():
    with members_bounded() as session:
        return {"items": [_described(session, c) for c in session.scalars(select(Cohort).order_by(Cohort.name))]}


@insights_bp.get("/cohorts/<name>", summary="A saved cohort with its member count now", description=MEMBERS_DOC,
                 responses={200: CohortOut, 404: Problem, 422: Problem})
def get_cohort(path: CohortPath):
    name = path.name
    with members_bounded() as session:
        cohort = session.get(Cohort, name)
        if cohort is None:
            raise _problem(404, "name", f"No saved cohort {name!r}")
        return _described(session, cohort)


@insights_bp.delete("/cohorts/<name>", summary="Delete a saved cohort",
                    responses={204: None, 404: Problem, 422: Problem})
def delete_cohort(path: CohortPath):
    name = path.name
    with session_scope() as session:
        cohort = session.get(Cohort, name)
        if cohort is None:
            raise _problem(404, "name", f"No saved cohort {name!r}")
        session.delete(cohort)
    return "", 204
