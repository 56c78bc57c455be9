"""Fitted population models in MongoDB `models`: versioned, the newest is the one in use.

A model holds everything scoring one customer needs about everybody else, computed together
when it is fitted: the BG/NBD and Gamma-Gamma parameters (with whether the optimiser converged
and which parameters it held at a bound), the RFM quintile breakpoints and the co-purchase
weights of the recommendations. Scoring keeps the decoded model per process and reads the newest
version's number from Redis (`publish_version`, written by every fit), or from MongoDB when Redis
does not have it.
"""
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from redis.exceptions import RedisError

from shared.analytics.models import BGNBDParams, CoPurchases, GammaGammaParams
from shared.cache import get_redis, key
from shared.mongo import MODELS

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
class Model:
    version: int
    bgnbd: BGNBDParams | None
    gamma_gamma: GammaGammaParams | None
    rfm: RFMBreakpoints | None
    co_purchases: CoPurchases | None


def _params(cls, doc: dict | None):
    if not doc:
        return None
    return cls(**{**doc, "at_bounds": tuple(doc.get("at_bounds", ()))})


def save(db: Database, as_of: date, bgnbd: BGNBDParams, gamma_gamma: GammaGammaParams | None,
         population: dict, timings: dict) -> dict:
    latest_doc = db[MODELS].find_one(sort=[("version", DESCENDING)], projection={"version": 1})
    version = (latest_doc["version"] if latest_doc else 0) + 1
    doc = {
        "version": version,
        "fitted_at": datetime.now(UTC),
        "as_of": as_of.isoformat(),
        "n_customers": bgnbd.n_customers,
        "bgnbd": {**asdict(bgnbd), "at_bounds": list(bgnbd.at_bounds)},
        "gamma_gamma": {**asdict(gamma_gamma), "at_bounds": list(gamma_gamma.at_bounds)} if gamma_gamma else None,
        "population": population,
        "timings_ms": timings,
    }
    try:
        db[MODELS].insert_one(doc)
    except DuplicateKeyError:  # two fits finished together: take the next number
        doc.pop("_id", None)
        return save(db, as_of, bgnbd, gamma_gamma, population, timings)
    doc.pop("_id", None)
    try:
        publish_version(version)
    except RedisError:
        pass  # profiles then find the version in MongoDB
    doc["population"] = {k: v for k, v in population.items() if k != "co_purchases"}
    return doc


def latest(db: Database) -> dict | None:
    """The newest model's document, without the co-purchase weights."""
    return db[MODELS].find_one(sort=[("version", DESCENDING)], projection=SUMMARY_PROJECTION)


def converged(doc: dict) -> bool:
    """Both fits of a stored model converged (a document without the flag predates it: trusted)."""
    bgnbd, gamma_gamma = doc["bgnbd"], doc.get("gamma_gamma")
    return bool(bgnbd.get("converged", True) and (gamma_gamma is None or gamma_gamma.get("converged", True)))


def latest_version(db: Database) -> int | None:
    doc = db[MODELS].find_one(sort=[("version", DESCENDING)], projection={"_id": 0, "version": 1})
    return doc["version"] if doc else None


def decode(doc: dict) -> Model:
    population = doc.get("population") or {}
    rfm = population.get("rfm")
    co = population.get("co_purchases")
    return Model(
        version=doc["version"],
        bgnbd=_params(BGNBDParams, doc.get("bgnbd")),
        gamma_gamma=_params(GammaGammaParams, doc.get("gamma_gamma")),
        rfm=RFMBreakpoints(rfm["recency"], rfm["frequency"], rfm["monetary"]) if rfm else None,
        co_purchases=CoPurchases.from_document(co) if co else None,
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


def current_version(db: Database) -> int | None:
    """The newest model's version: from Redis, or from MongoDB when Redis has none (after a
    Redis restart) or cannot be reached."""
    try:
        cached = get_redis().get(_version_key())
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
        self._models: dict[str, Model] = {}

    def get(self, db: Database) -> Model | None:
        version = current_version(db)
        if version is None:
            return None
        key_ = f"{db.client.address}/{db.name}"
        with self._lock:
            model = self._models.get(key_)
        if model is not None and model.version == version:
            return model
        doc = db[MODELS].find_one({"version": version}, projection={"_id": 0})
        if doc is None:  # Redis names a version this database does not have (another stack's)
            doc = db[MODELS].find_one(sort=[("version", DESCENDING)], projection={"_id": 0})
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
