"""Analytics endpoints: the guide's MongoDB aggregation, segments, model fitting, cache stats."""
from datetime import UTC, date, datetime, timedelta

from celery.exceptions import TimeoutError as ResultTimeout
from flask import current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select

from services.api.problems import ProblemError, validation_problem
from shared import profile_cache, reference
from shared.analytics import model_store
from shared.db import session_scope
from shared.models import Address, CategorySales, City, Country, User
from shared.mongo import CUSTOMER_STATS, get_database
from shared.schemas import FieldProblem, Problem, iso_text
from shared.topology import FIT_MODELS

analytics_bp = APIBlueprint("analytics", __name__, url_prefix="/api", abp_tags=[Tag(name="analytics")])
FIT_TIMEOUT_SECONDS = 300


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


class CustomerStatsOut(BaseModel):
    computed_at: str
    customers: int = Field(description="Users with at least one purchase")
    model_version: int | None = Field(description="Model the P(alive) and LTV figures come from; null before the first fit")
    churn_risk: HistogramOut = Field(description="Customers by churn risk (percent, the profile's churn_risk)")
    p_alive: HistogramOut | None = Field(description="Customers by BG/NBD P(alive)")
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
    summary="Fit BG/NBD and Gamma-Gamma on every customer's summary up to `as_of`",
    description="Body (optional): `{\"as_of\": \"YYYY-MM-DD\"}`. Runs on the analytics worker from the "
    "per-customer summaries (not the event log), together with the population statistics profiles use "
    "(RFM breakpoints, co-purchase weights); stored with a new version and used by every profile from "
    "then on (everyone is rescored in the background). Says whether the optimiser converged and which "
    "parameters it held at a bound.",
    responses={200: ModelOut, 422: Problem, 503: Problem},
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
    celery = current_app.extensions["celery"]
    try:
        result = celery.send_task(FIT_MODELS, kwargs={"as_of": as_of.isoformat()})
        model = result.get(timeout=FIT_TIMEOUT_SECONDS, propagate=False)
    except ResultTimeout as exc:
        raise ProblemError(503, "The analytics worker did not answer in time") from exc
    except Exception as exc:  # broker or result backend down
        raise ProblemError(503, f"Could not reach the analytics worker ({type(exc).__name__})") from exc
    if result.failed():
        raise ProblemError(503, f"The analytics worker failed to fit the models ({type(model).__name__})",
                           headers={"Retry-After": "60"})
    if "error" in model:
        raise ProblemError(422, f"The models could not be fitted: {model['error']}",
                           [FieldProblem(field="as_of", message=model["error"])])
    return _fit_response(model)


@analytics_bp.get("/analytics/models/latest", summary="The fitted models profiles use now",
                  responses={200: ModelOut, 404: Problem})
def latest_model():
    model = model_store.latest(get_database())
    if model is None:
        raise ProblemError(404, "No model has been fitted yet: POST /api/analytics/models/fit")
    model["fitted_at"] = model["fitted_at"].isoformat()
    return _fit_response(model)


def _fit_response(model: dict) -> dict:
    bg, gg = model["bgnbd"], model.get("gamma_gamma")
    fit_keys = ("converged", "at_bounds", "iterations")
    population = model.get("population") or {}
    return {
        "version": model["version"],
        "fitted_at": model["fitted_at"],
        "as_of": model["as_of"],
        "n_customers": model["n_customers"],
        "converged": model_store.converged(model),
        "bgnbd": {k: bg[k] for k in ("r", "alpha", "a", "b", "log_likelihood")}
        | {k: bg.get(k) for k in fit_keys},
        "gamma_gamma": ({k: gg[k] for k in ("p", "q", "gamma", "log_likelihood")} | {k: gg.get(k) for k in fit_keys})
        if gg
        else None,
        "population": {
            "customers": population.get("customers", model["n_customers"]),
            "categories": population.get("categories"),
            "rfm": _rfm_out(population["rfm"]) if population.get("rfm") else None,
        },
        "timings_ms": model.get("timings_ms"),
    }


def _rfm_out(rfm: dict) -> dict:
    def day(value):
        return (date(1970, 1, 1) + timedelta(days=int(value))).isoformat() if value is not None else None

    return {"recency": [day(v) for v in rfm["recency"]], "frequency": rfm["frequency"], "monetary": rfm["monetary"]}
