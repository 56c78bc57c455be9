"""Fitted population models in MongoDB `models`: versioned, the newest is the one in use.

A model holds everything scoring one customer needs about everybody else, computed together
when it is fitted: the parameters of every purchase model (BG/NBD, Pareto/NBD, MBG/NBD, each with
its standard errors, whether the optimiser converged and which parameters it held at a bound, or
why it could not be fitted), which of them scores profiles (SCORING_MODEL at the fit), the
Gamma-Gamma parameters, the RFM quintile breakpoints and the co-purchase weights of the
recommendations. Scoring keeps the decoded model per process and reads the newest
version's number from Redis (`publish_version`, written by every fit), or from MongoDB when Redis
does not have it.
"""
import math
import threading
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from redis.exceptions import RedisError

from shared.analytics.stats import BGNBDParams, CoPurchases, GammaGammaParams
from shared.analytics.stats.registry import MODELS as PURCHASE_MODELS
from shared.infra.cache import get_redis, key, reply
from shared.infra.mongo import FITTED_MODELS, Document

# What GET /api/analytics/models/latest shows: everything but the co-purchase weights.
SUMMARY_PROJECTION = {"_id": 0, "population.co_purchases": 0}


@dataclass(frozen=True)
class RFMBreakpoints:
    """Where RFM scores 2..5 begin (see models.rfm.quintile_breakpoints); recency on the day of
    the last purchase (days since 1970-01-01), frequency on purchase days, monetary on spend."""

    recency: list[float | None]
    frequency: list[float | None]
    monetary: list[float | None]


@dataclass(frozen=True)
class FittedModel:
    version: int
    bgnbd: BGNBDParams | None
    gamma_gamma: GammaGammaParams | None
    rfm: RFMBreakpoints | None
    co_purchases: CoPurchases | None
    # The purchase model that scores profiles, and every purchase model fitted (name -> params).
    scoring_model: str = "bgnbd"
    models: dict[str, Any] = field(default_factory=dict)

    @property
    def purchase(self) -> Any:
        """The scoring model's parameters (BG/NBD's for a model stored before there were others)."""
        return self.models.get(self.scoring_model, self.bgnbd if self.scoring_model == "bgnbd" else None)


def _finite(value: float | None) -> float | None:
    # Standard errors of a parameter the data do not identify are infinite or NaN: JSON and BSON
    # readers get null for them.
    return float(value) if value is not None and math.isfinite(value) else None


def params_document(params: Any) -> dict[str, Any]:  # a stats.params.fitted_params instance
    doc = {**asdict(params), "at_bounds": list(params.at_bounds)}
    if "standard_errors" in doc:
        doc["standard_errors"] = {k: _finite(v) for k, v in (doc["standard_errors"] or {}).items()}
    return doc


def _params(cls: type[Any], doc: dict[str, Any] | None) -> Any:  # an instance of cls, or None
    if not doc or "error" in doc:
        return None
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in doc.items() if k in names}
    if "standard_errors" in values:
        errors = values["standard_errors"] or {}
        values["standard_errors"] = {k: (math.nan if v is None else v) for k, v in errors.items()}
    return cls(**{**values, "at_bounds": tuple(doc.get("at_bounds", ()))})


def save(db: Database[Document], as_of: date, models: dict[str, Any], scoring_model: str,
         gamma_gamma: GammaGammaParams | None, population: dict[str, Any], timings: dict[str, Any]) -> dict[str, Any]:
    """Store the next version. `models`: name -> fitted params, or the reason it could not be fitted
    (a string); the scoring model must be fitted."""
    latest_doc = db[FITTED_MODELS].find_one(sort=[("version", DESCENDING)], projection={"version": 1})
    version = (latest_doc["version"] if latest_doc else 0) + 1
    scoring = models[scoring_model]
    bgnbd = models.get("bgnbd")
    doc = {
        "version": version,
        "fitted_at": datetime.now(UTC),
        "as_of": as_of.isoformat(),
        "n_customers": scoring.n_customers,
        "scoring_model": scoring_model,
        "models": {name: {"error": params} if isinstance(params, str) else params_document(params)
                   for name, params in models.items()},
        "bgnbd": params_document(bgnbd) if bgnbd is not None and not isinstance(bgnbd, str) else None,
        "gamma_gamma": params_document(gamma_gamma) if gamma_gamma else None,
        "population": population,
        "timings_ms": timings,
    }
    try:
        db[FITTED_MODELS].insert_one(doc)
    except DuplicateKeyError:  # two fits finished together: take the next number
        doc.pop("_id", None)
        return save(db, as_of, models, scoring_model, gamma_gamma, population, timings)
    doc.pop("_id", None)
    try:
        publish_version(version)
    except RedisError:
        pass  # profiles then find the version in MongoDB
    doc["population"] = {k: v for k, v in population.items() if k != "co_purchases"}
    return doc


def latest(db: Database[Document]) -> dict[str, Any] | None:
    """The newest model's document, without the co-purchase weights."""
    return db[FITTED_MODELS].find_one(sort=[("version", DESCENDING)], projection=SUMMARY_PROJECTION)


def scoring_document(doc: dict[str, Any]) -> dict[str, Any]:
    """The stored parameters of the model that scores profiles."""
    name = doc.get("scoring_model", "bgnbd")
    stored: dict[str, Any] = (doc.get("models") or {}).get(name) or doc["bgnbd"]
    return stored


def converged(doc: dict[str, Any]) -> bool:
    """The scoring model's fit and Gamma-Gamma's converged (a document without the flag predates it: trusted)."""
    scoring, gamma_gamma = scoring_document(doc), doc.get("gamma_gamma")
    return bool(scoring.get("converged", True) and (gamma_gamma is None or gamma_gamma.get("converged", True)))


def latest_version(db: Database[Document]) -> int | None:
    doc = db[FITTED_MODELS].find_one(sort=[("version", DESCENDING)], projection={"_id": 0, "version": 1})
    return doc["version"] if doc else None


def decode(doc: dict[str, Any]) -> FittedModel:
    population = doc.get("population") or {}
    rfm = population.get("rfm")
    co = population.get("co_purchases")
    bgnbd = _params(BGNBDParams, doc.get("bgnbd"))
    stored = doc.get("models") or ({"bgnbd": doc["bgnbd"]} if doc.get("bgnbd") else {})
    models = {name: params for name, model_doc in stored.items() if name in PURCHASE_MODELS
              and (params := _params(PURCHASE_MODELS[name].params_cls, model_doc)) is not None}
    return FittedModel(
        version=doc["version"],
        bgnbd=bgnbd,
        gamma_gamma=_params(GammaGammaParams, doc.get("gamma_gamma")),
        rfm=RFMBreakpoints(rfm["recency"], rfm["frequency"], rfm["monetary"]) if rfm else None,
        co_purchases=CoPurchases.from_document(co) if co else None,
        scoring_model=doc.get("scoring_model", "bgnbd"),
        models=models,
    )


# The newest version's number is also kept in Redis, written by every fit: a profile asks Redis
# (which a cache miss talks to anyway) instead of MongoDB, whose dev server stalls under heavy
# writes. Only a greater number replaces it, so two fits finishing together leave the newer one.
_PUBLISH_IF_NEWER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0
"""


def _version_key() -> str:
    return key("model", "version")


def publish_version(version: int) -> None:
    get_redis().eval(_PUBLISH_IF_NEWER, 1, _version_key(), int(version))


def current_version(db: Database[Document]) -> int | None:
    """The newest model's version: from Redis, or from MongoDB when Redis has none (after a
    Redis restart) or cannot be reached."""
    try:
        cached = reply(get_redis().get(_version_key()))
        if cached is not None:
            return int(cached)
    except RedisError:
        return latest_version(db)
    version = latest_version(db)
    if version is not None:
        try:
            publish_version(version)
        except RedisError:
            pass
    return version


class _Current:
    """The newest model, decoded once per process and version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, FittedModel] = {}

    def get(self, db: Database[Document]) -> FittedModel | None:
        version = current_version(db)
        if version is None:
            return None
        key_ = f"{db.client.address}/{db.name}"
        with self._lock:
            model = self._models.get(key_)
        if model is not None and model.version == version:
            return model
        doc = db[FITTED_MODELS].find_one({"version": version}, projection={"_id": 0})
        if doc is None:  # Redis names a version this database does not have (another stack's)
            doc = db[FITTED_MODELS].find_one(sort=[("version", DESCENDING)], projection={"_id": 0})
            if doc is None:
                return None
        model = decode(doc)
        with self._lock:
            self._models[key_] = model
        return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


current = _Current()


def _fit_view(doc: dict[str, Any] | None, names: tuple[str, ...]) -> dict[str, Any] | None:
    if not doc:
        return None
    view = {k: doc[k] for k in (*names, "log_likelihood")}
    view |= {k: doc.get(k) for k in ("converged", "at_bounds", "iterations")}
    view["standard_errors"] = {k: (doc.get("standard_errors") or {}).get(k) for k in names}
    return view


def describe(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored model as the fit job's result and GET /api/analytics/models/latest show it: every
    purchase model's parameters with their standard errors (or why it could not be fitted), which
    one scores profiles, Gamma-Gamma, the population statistics (without the co-purchase weights)."""
    population = doc.get("population") or {}
    stored = doc.get("models") or ({"bgnbd": doc["bgnbd"]} if doc.get("bgnbd") else {})
    models = {}
    for name, model_doc in stored.items():
        if name not in PURCHASE_MODELS:
            continue
        if "error" in model_doc:
            models[name] = {"error": model_doc["error"]}
            continue
        names = PURCHASE_MODELS[name].parameter_names
        view = _fit_view(model_doc, names)
        assert view is not None  # a stored fit's document is never empty (params_document)
        models[name] = {"parameters": {k: view[k] for k in names}, "standard_errors": view["standard_errors"],
                        "log_likelihood": view["log_likelihood"], "converged": view["converged"],
                        "at_bounds": view["at_bounds"], "iterations": view["iterations"]}
    return {
        "version": doc["version"],
        "fitted_at": doc["fitted_at"] if isinstance(doc["fitted_at"], str) else doc["fitted_at"].isoformat(),
        "as_of": doc["as_of"],
        "n_customers": doc["n_customers"],
        "converged": converged(doc),
        "scoring_model": doc.get("scoring_model", "bgnbd"),
        "models": models,
        "bgnbd": _fit_view(doc.get("bgnbd"), ("r", "alpha", "a", "b")),
        "gamma_gamma": _fit_view(doc.get("gamma_gamma"), ("p", "q", "gamma")),
        "population": {
            "customers": population.get("customers", doc["n_customers"]),
            "categories": population.get("categories"),
            "rfm": _rfm_view(population["rfm"]) if population.get("rfm") else None,
        },
        "timings_ms": doc.get("timings_ms"),
    }


def _rfm_view(rfm: dict[str, Any]) -> dict[str, Any]:
    def day(value: float | None) -> str | None:
        return (date(1970, 1, 1) + timedelta(days=int(value))).isoformat() if value is not None else None

    return {"recency": [day(v) for v in rfm["recency"]], "frequency": rfm["frequency"], "monetary": rfm["monetary"]}
