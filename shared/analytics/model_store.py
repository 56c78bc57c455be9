"""Fitted population models in MongoDB `models`: versioned, the newest is the one in use.

A model holds everything scoring one customer needs about everybody else, computed together
when it is fitted: the BG/NBD and Gamma-Gamma parameters (with whether the optimiser converged
and which parameters it held at a bound), the RFM quintile breakpoints and the co-purchase
weights of the recommendations. Scoring reads the newest version's number (one indexed read)
and keeps the decoded model per process until a newer version appears.
"""
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.analytics.models import BGNBDParams, CoPurchases, GammaGammaParams
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
    doc["population"] = {k: v for k, v in population.items() if k != "co_purchases"}
    return doc


def latest(db: Database) -> dict | None:
    """The newest model's document, without the co-purchase weights."""
    return db[MODELS].find_one(sort=[("version", DESCENDING)], projection=SUMMARY_PROJECTION)


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


class _Current:
    """The newest model, decoded once per process and version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, Model] = {}

    def get(self, db: Database) -> Model | None:
        version = latest_version(db)
        if version is None:
            return None
        key = f"{db.client.address}/{db.name}"
        with self._lock:
            model = self._models.get(key)
        if model is not None and model.version == version:
            return model
        doc = db[MODELS].find_one({"version": version}, projection={"_id": 0})
        model = decode(doc)
        with self._lock:
            self._models[key] = model
        return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


current = _Current()
