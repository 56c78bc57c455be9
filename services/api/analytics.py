"""Analytics endpoints: the guide's MongoDB aggregation, segments, model fitting, cache stats."""
from datetime import UTC, date, datetime
from typing import Any

from flask import request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select

from services.api.problems import Problem, ProblemError, validation_problem
from shared.analytics import fitted_models
from shared.analytics.holdouts import history as validation_history
from shared.contracts.schemas import iso_text
from shared.contracts.tables import Address, CategorySales, City, Country, OutboxMessage, User
from shared.contracts.topology import FIT_MODELS, VALIDATE_MODELS
from shared.infra import request_ids, tracing
from shared.infra.db import session_scope
from shared.infra.mongo import CUSTOMER_STATS, get_database
from shared.pipeline import jobs, profile_cache, reference

analytics_bp = APIBlueprint("analytics", __name__, url_prefix="/api", abp_tags=[Tag(name="analytics")])


class FitDiagnostics(BaseModel):
    converged: bool = Field(description="The optimiser stopped where the gradient vanishes")
    at_bounds: list[str] = Field(
        description="Parameters the fit held at a bound (1e-4..1e4 in the rescaled problem): the data do "
        "not identify them, e.g. a -> 0 and b -> inf when nobody has dropped out yet"
    )
    iterations: int | None


class BGNBDOut(FitDiagnostics):
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float


class GammaGammaOut(FitDiagnostics):
    p: float
    q: float
    gamma: float
    log_likelihood: float


class RFMBreakpointsOut(BaseModel):
    recency: list[str | None] = Field(description="Last purchase day from which recency scores 2, 3, 4, 5")
    frequency: list[float | None] = Field(description="Purchase days from which frequency scores 2..5")
    monetary: list[float | None] = Field(description="Spend from which monetary scores 2..5")


class PopulationOut(BaseModel):
    customers: int = Field(description="Customers the population statistics were computed over")
    categories: int | None = Field(None, description="Categories the recommendations know")
    rfm: RFMBreakpointsOut | None = None


class ModelOut(BaseModel):
    version: int
    fitted_at: str
    as_of: str = Field(description="Last day of the observation period the purchase models were fitted on")
    n_customers: int = Field(description="Customers with a purchase up to as_of")
    converged: bool = Field(description="Both fits converged")
    bgnbd: BGNBDOut
    gamma_gamma: GammaGammaOut | None = Field(description="Null with fewer than two repeat buyers")
    population: PopulationOut
    timings_ms: dict[str, float] | None = None


class CategoryOut(BaseModel):
    category: str
    total_sales: float
    transactions: int
    avg_price: float


class CategoriesOut(BaseModel):
    items: list[CategoryOut]


class SegmentCount(BaseModel):
    segment: str
    users: int


class SegmentsOut(BaseModel):
    items: list[SegmentCount]


class CountryStats(BaseModel):
    code: str
    country: str
    users: int
    avg_score: float | None = Field(description="Null while none of the country's users has been scored")


class CountriesOut(BaseModel):
    items: list[CountryStats]


class CacheStatsOut(BaseModel):
    lru: dict[str, dict[str, int]]
    profiles: dict[str, int]


class HistogramOut(BaseModel):
    edges: list[float] = Field(description="Bin i counts values in [edges[i], edges[i+1]); the last bin "
                               "includes its upper edge, or everything above it when open_ended")
    counts: list[int]
    open_ended: bool


class LTVDistributionOut(HistogramOut):
    mean: float | None
    median: float | None
    p90: float | None
    total: float | None


class PAliveMatrixOut(BaseModel):
    frequency: list[int] = Field(description="Rows: repeat purchase days")
    recency_weeks: list[float] = Field(description="Columns: weeks from the first purchase to the last")
    age_weeks: float = Field(description="The customer age (weeks since the first purchase) the matrix is drawn for: "
                             "the oldest customer's")
    p_alive: list[list[float]] = Field(description="P(alive) per frequency row and recency column")


class PAliveByBuyersOut(BaseModel):
    one_time: HistogramOut
    repeat: HistogramOut


class CustomerStatsOut(BaseModel):
    computed_at: str
    customers: int = Field(description="Users with at least one purchase")
    model_version: int | None = Field(
        description="Model the P(alive) and LTV figures come from; null before the first fit")
    churn_risk: HistogramOut = Field(description="Customers by churn risk (percent, the profile's churn_risk)")
    scoring_model: str | None = Field(None, description="Purchase model the P(alive) and LTV figures come from")
    p_alive: HistogramOut | None = Field(description="Customers by P(alive) (the scoring model's)")
    p_alive_by_buyers: PAliveByBuyersOut | None = Field(
        None, description="The same, one-time buyers (no repeat purchase: BG/NBD's P(alive) is 1 for each) and "
        "repeat buyers apart")
    predicted_ltv: LTVDistributionOut | None = Field(description="Customers by predicted lifetime value")
    p_alive_matrix: PAliveMatrixOut | None
    compute_ms: float


class TopCategoriesQuery(BaseModel):
    limit: int = Field(5, ge=1, le=100)


class FitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: date | None = Field(
        None, description="Last day of the observation period (its purchases count); default today (UTC)"
    )

    _as_of_is_text = field_validator("as_of", mode="before")(lambda value: iso_text(value, "as_of"))

    @field_validator("as_of")
    @classmethod
    def _not_in_future(cls, value: date | None) -> date | None:
        if value is not None and value > datetime.now(UTC).date():
            raise ValueError("as_of cannot be in the future")
        return value


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calibration_end: date = Field(description="Last day of the calibration period (its purchases are fitted on)")
    holdout_end: date = Field(description="Last day of the holdout: after calibration_end, not in the future")

    _dates_are_text = field_validator("calibration_end", "holdout_end", mode="before")(
        lambda value, info: iso_text(value, info.field_name))

    @field_validator("holdout_end")
    @classmethod
    def _after_calibration(cls, value: date, info) -> date:
        calibration_end = info.data.get("calibration_end")
        if calibration_end is not None and value <= calibration_end:
            raise ValueError("holdout_end must be after calibration_end")
        if value > datetime.now(UTC).date():
            raise ValueError("holdout_end cannot be in the future")
        return value


class JobError(BaseModel):
    detail: str
    field: str | None = Field(description="The request field the reason is about, when there is one")


class JobOut(BaseModel):
    id: str
    kind: str = Field(description="fit, validation, or an insight query run as a job: funnel, retention, lifecycle")
    status: str = Field(description="queued, running, done or failed")
    params: dict[str, Any] = Field(description="What the job was asked to do (the request's fields)")
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int = Field(description="How many times a worker started it (a retry after a worker died counts)")
    result: dict[str, Any] | None = Field(description="When done: the stored model (a fit) or the validation")
    error: JobError | None = Field(description="When failed: why")


class JobsOut(BaseModel):
    items: list[JobOut]


class ValidationsQuery(BaseModel):
    limit: int = Field(10, ge=1, le=100)


class JobPath(BaseModel):
    job_id: str


class HoldoutQuery(BaseModel):
    limit: int = Field(90, ge=1, le=1000)


class HoldoutCheckOut(BaseModel):
    checked_at: str
    model_version: int
    model: str
    scoring: bool = Field(description="Whether this model scored the profiles of that version")
    calibration_end: str = Field(description="The model's as_of")
    holdout_end: str = Field(description="The last complete day when the check ran")
    customers: int
    weeks: float
    actual_repeat_purchases: int
    predicted_repeat_purchases: float
    mae: float
    rmse: float
    by_calibration_frequency: list[dict[str, Any]]
    weekly: list[dict[str, Any]]


class HoldoutHistoryOut(BaseModel):
    items: list[HoldoutCheckOut]


@analytics_bp.get(
    "/analytics/categories/top",
    summary="Top categories by sales",
    description="Total sales, transactions and average price per category: the guide's MongoDB "
    "aggregation (`$match` purchases, `$group` by `metadata.category`), kept as running totals that "
    "the worker adds every stored batch to, so the answer does not scan the events.",
    responses={200: CategoriesOut},
)
def top_categories(query: TopCategoriesQuery):
    with session_scope() as session:
        rows = session.execute(
            select(CategorySales.category, CategorySales.spent, CategorySales.purchases)
            .where(CategorySales.purchases > 0)
            .order_by(CategorySales.spent.desc(), CategorySales.category)
            .limit(query.limit)
        ).all()
    return {
        "items": [
            {
                "category": row.category,
                "total_sales": round(float(row.spent), 2),
                "transactions": row.purchases,
                "avg_price": round(float(row.spent) / row.purchases, 2),
            }
            for row in rows
        ]
    }


@analytics_bp.get("/analytics/segments", summary="How many users are in each segment (one GROUP BY)",
                  responses={200: SegmentsOut})
def segments():
    # users.segment is written with the profile score by every rescoring: counting it in Postgres
    # takes a fraction of a second at a million users, where scanning MongoDB profiles took seconds
    # and, on the single-process dev server, stalled everything else meanwhile.
    with session_scope() as session:
        rows = session.execute(
            select(User.segment, func.count().label("users"))
            .where(User.segment.is_not(None))
            .group_by(User.segment)
            .order_by(func.count().desc(), User.segment)
        ).all()
    return {"items": [{"segment": row.segment, "users": row.users} for row in rows]}


@analytics_bp.get(
    "/analytics/customers",
    summary="Customer distributions: churn risk, P(alive), predicted LTV, and the P(alive) matrix",
    description="Computed by the analytics worker in one batch over the customer summaries every "
    "CUSTOMER_STATS_SECONDS (default 60) and after every fit, scoring each customer as their profile "
    "does; this reads the stored result, so its cost does not grow with the population. 404 until "
    "the first computation.",
    responses={200: CustomerStatsOut, 404: Problem},
)
def customer_stats():
    doc = get_database()[CUSTOMER_STATS].find_one({"_id": "current"}, projection={"_id": 0})
    if doc is None:
        raise ProblemError(404, "The customer distributions have not been computed yet: the analytics worker "
                           "computes them every CUSTOMER_STATS_SECONDS and after each fit")
    doc["computed_at"] = doc["computed_at"].isoformat()
    return doc


@analytics_bp.get("/stats/countries", summary="Users and average score per country (one GROUP BY)",
                  responses={200: CountriesOut})
def country_stats():
    statement = (
        select(
            Country.code,
            Country.name,
            func.count(User.id).label("users"),
            func.avg(User.profile_score).label("avg_score"),
        )
        .join(City, City.country_id == Country.id)
        .join(Address, Address.city_id == City.id)
        .join(User, User.address_id == Address.id)
        .group_by(Country.id)
        .order_by(func.count(User.id).desc(), Country.name)
    )
    with session_scope() as session:
        rows = session.execute(statement).all()
    return {
        "items": [
            {"code": r.code, "country": r.name, "users": r.users,
             "avg_score": round(float(r.avg_score), 2) if r.avg_score is not None else None}
            for r in rows
        ]
    }


@analytics_bp.get("/stats/cache", summary="Cache statistics of this API process (LRU and Redis)",
                  responses={200: CacheStatsOut})
def cache_stats():
    return {"lru": reference.cache_stats(), "profiles": profile_cache.stats()}


@analytics_bp.post(
    "/analytics/models/fit",
    summary="Fit every purchase model and Gamma-Gamma up to `as_of`, as a job",
    description="Body (optional): `{\"as_of\": \"YYYY-MM-DD\"}`. Answers 202 at once with the job and "
    "`Location: /api/analytics/jobs/<id>`; poll that until `status` is `done` (its `result` is the stored "
    "model, as `GET /api/analytics/models/latest` shows it) or `failed` (its `error` says why, e.g. fewer than "
    "two customers up to `as_of`). The analytics worker fits from the per-customer summaries (not the event "
    "log) every purchase model (BG/NBD, Pareto/NBD, MBG/NBD) with standard errors, Gamma-Gamma and the "
    "population statistics profiles use; the new version is used by every profile from then on, scored by "
    "SCORING_MODEL (everyone is rescored in the background).",
    responses={202: JobOut, 422: Problem},
    # The body is optional, so the view reads it itself; the document still describes it.
    openapi_extensions={"requestBody": {"required": False, "content": {
        "application/json": {"schema": FitRequest.model_json_schema()}}}},
)
def fit_models():
    # No body means the defaults; a body must be the object the document describes (a JSON
    # `null` or list is refused as such, not read as "no body").
    payload = request.get_json(silent=True) if request.get_data(cache=True) else {}
    try:
        body = FitRequest.model_validate(payload)
    except ValidationError as exc:
        return validation_problem(exc)
    as_of = body.as_of or datetime.now(UTC).date()
    return submit_job(jobs.FIT, FIT_MODELS, {"as_of": as_of.isoformat()})


@analytics_bp.post(
    "/analytics/models/validate",
    summary="Validate every purchase model on a calibration/holdout split, as a job",
    description="Body: `{\"calibration_end\": \"YYYY-MM-DD\", \"holdout_end\": \"YYYY-MM-DD\"}`. Answers "
    "202 with `Location: /api/analytics/jobs/<id>`. The job fits every purchase model on the customers' purchases "
    "up to `calibration_end` and compares what each predicts for (`calibration_end`, `holdout_end`] with what "
    "those customers did: the total, by repeat purchases in calibration (0..7+), week by week, and the "
    "per-customer MAE and RMSE, beside a naive per-customer rate. Reads the summaries and purchase days, never "
    "the event log; nothing is stored but the job.",
    responses={202: JobOut, 422: Problem},
)
def validate_models(body: ValidateRequest):
    return submit_job(jobs.VALIDATION, VALIDATE_MODELS, {"calibration_end": body.calibration_end.isoformat(),
                                                      "holdout_end": body.holdout_end.isoformat()})


def submit_job(kind: str, task: str, params: dict[str, Any]):
    """Write the job (queued) and the message that runs it in one transaction: the outbox relay
    publishes it (shared.contracts.tables.OutboxMessage, as a signup's), so a job is never lost nor left
    without its task, even while the broker is down; the client polls the job."""
    with session_scope() as session:
        job_id = jobs.create(session, kind, params)
        with tracing.outbox_write(task) as traceparent:  # the relay continues this trace
            session.add(OutboxMessage(id=job_id, task_name=task, payload={"job_id": str(job_id)},
                                      request_id=request_ids.current(), traceparent=traceparent))
        job = jobs.get(session, job_id)
        assert job is not None  # created just above, in this transaction
        answer = jobs.describe(job)
    return answer, 202, {"Location": jobs.location(job_id)}


@analytics_bp.get(
    "/analytics/jobs/<job_id>",
    summary="A fit, validation or insight job: its status and, when done, its result",
    description="`status` is `queued`, `running`, `done` (then `result` holds the answer) or `failed` (then "
    "`error.detail` says why and `error.field` names the request field it is about, when one is). 404 for an id "
    "that names no job.",
    responses={200: JobOut, 404: Problem},
)
def get_job(path: JobPath):
    job_id = jobs.parse_id(path.job_id)
    with session_scope() as session:
        job = jobs.get(session, job_id) if job_id is not None else None
        if job is None:
            raise ProblemError(404, f"No job {path.job_id[:100]!r}: jobs are made by POST /api/analytics/models/fit "
                               "and /validate, and by insight queries run as jobs")
        return jobs.describe(job)


@analytics_bp.get(
    "/analytics/models/validations",
    summary="The newest finished validation jobs, newest first (the dashboard draws the first)",
    responses={200: JobsOut},
)
def list_validations(query: ValidationsQuery):
    with session_scope() as session:
        return {"items": [jobs.describe(job) for job in jobs.latest_done(session, jobs.VALIDATION, query.limit)]}


@analytics_bp.get(
    "/analytics/models/holdout",
    summary="The rolling holdout: how well each stored model predicted its customers since it was fitted",
    description="Before every scheduled refit the analytics worker scores the model in use, with each purchase "
    "model it stored, against what its customers did from its `as_of` to the last complete day; the newest "
    "checks first (at most `limit`).",
    responses={200: HoldoutHistoryOut},
)
def holdout_history(query: HoldoutQuery):
    with session_scope() as session:
        return {"items": validation_history(session, query.limit)}


@analytics_bp.get("/analytics/models/latest", summary="The fitted models profiles use now",
                  responses={200: ModelOut, 404: Problem})
def latest_model():
    model = fitted_models.latest(get_database())
    if model is None:
        raise ProblemError(404, "No model has been fitted yet: POST /api/analytics/models/fit")
    return fitted_models.describe(model)
