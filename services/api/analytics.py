"""Analytics endpoints: the guide's MongoDB aggregation, segments, model fitting, cache stats."""
from datetime import UTC, date, datetime

from celery.exceptions import TimeoutError as ResultTimeout
from flask import current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select

from services.analytics import models_store
from services.api.problems import ProblemError, validation_problem
from shared import profile_cache, reference
from shared.db import session_scope
from shared.models import Address, City, Country, User
from shared.mongo import EVENTS, PROFILES, get_database
from shared.schemas import Problem
from shared.topology import FIT_MODELS

analytics_bp = APIBlueprint("analytics", __name__, url_prefix="/api", abp_tags=[Tag(name="analytics")])
FIT_TIMEOUT_SECONDS = 300


class TopCategoriesQuery(BaseModel):
    limit: int = Field(5, ge=1, le=100)


class FitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: date | None = Field(
        None, description="Last day of the observation period (its purchases count); default today (UTC)"
    )

    @field_validator("as_of")
    @classmethod
    def _not_in_future(cls, value: date | None) -> date | None:
        if value is not None and value > datetime.now(UTC).date():
            raise ValueError("as_of cannot be in the future")
        return value


@analytics_bp.get("/analytics/categories/top", summary="Top categories by sales (MongoDB aggregation)")
def top_categories(query: TopCategoriesQuery):
    pipeline = [
        {"$match": {"event_type": "user_purchase"}},
        {
            "$group": {
                "_id": "$metadata.category",
                "total_sales": {"$sum": "$metadata.price"},
                "count": {"$sum": 1},
                "avg_price": {"$avg": "$metadata.price"},
            }
        },
        {"$sort": {"total_sales": -1, "_id": 1}},
        {"$limit": query.limit},
    ]
    rows = get_database()[EVENTS].aggregate(pipeline)
    return {
        "items": [
            {
                "category": row["_id"],
                "total_sales": round(row["total_sales"], 2),
                "transactions": row["count"],
                "avg_price": round(row["avg_price"], 2),
            }
            for row in rows
        ]
    }


@analytics_bp.get("/analytics/segments", summary="How many users are in each segment")
def segments():
    rows = get_database()[PROFILES].aggregate(
        [
            {"$match": {"segment": {"$ne": None}}},
            {"$group": {"_id": "$segment", "users": {"$sum": 1}}},
            {"$sort": {"users": -1, "_id": 1}},
        ]
    )
    return {"items": [{"segment": row["_id"], "users": row["users"]} for row in rows]}


@analytics_bp.get("/stats/countries", summary="Users and average score per country (one GROUP BY)")
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
            {"code": r.code, "country": r.name, "users": r.users, "avg_score": round(float(r.avg_score), 2)}
            for r in rows
        ]
    }


@analytics_bp.get("/stats/cache", summary="Cache statistics of this API process (LRU and Redis)")
def cache_stats():
    return {"lru": reference.cache_stats(), "profiles": profile_cache.stats()}


@analytics_bp.post(
    "/analytics/models/fit",
    summary="Fit BG/NBD and Gamma-Gamma on every customer's purchases up to `as_of`",
    description="Body (optional): `{\"as_of\": \"YYYY-MM-DD\"}`. Runs on the analytics worker; the "
    "fitted model is stored with a new version and used by every profile from then on.",
    responses={422: Problem, 503: Problem},
)
def fit_models():
    try:
        body = FitRequest.model_validate(request.get_json(silent=True) or {})
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
        raise ProblemError(422, f"The models could not be fitted: {model}")
    return _fit_response(model)


@analytics_bp.get("/analytics/models/latest", summary="The fitted models profiles use now")
def latest_model():
    model = models_store.latest(get_database())
    if model is None:
        raise ProblemError(404, "No model has been fitted yet: POST /api/analytics/models/fit")
    model["fitted_at"] = model["fitted_at"].isoformat()
    return _fit_response(model)


def _fit_response(model: dict) -> dict:
    bg, gg = model["bgnbd"], model.get("gamma_gamma")
    return {
        "version": model["version"],
        "fitted_at": model["fitted_at"],
        "as_of": model["as_of"],
        "n_customers": model["n_customers"],
        "bgnbd": {k: bg[k] for k in ("r", "alpha", "a", "b", "log_likelihood")},
        "gamma_gamma": {k: gg[k] for k in ("p", "q", "gamma", "log_likelihood")} if gg else None,
    }
