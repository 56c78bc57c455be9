"""Fitted population models in MongoDB `models`: versioned, the newest is the one in use."""
from dataclasses import asdict
from datetime import UTC, date, datetime

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.analytics.models import BGNBDParams, GammaGammaParams
from shared.mongo import MODELS


def save(db: Database, as_of: date, bgnbd: BGNBDParams, gamma_gamma: GammaGammaParams | None) -> dict:
    latest = db[MODELS].find_one(sort=[("version", DESCENDING)], projection={"version": 1})
    version = (latest["version"] if latest else 0) + 1
    doc = {
        "version": version,
        "fitted_at": datetime.now(UTC),
        "as_of": as_of.isoformat(),
        "n_customers": bgnbd.n_customers,
        "bgnbd": asdict(bgnbd),
        "gamma_gamma": asdict(gamma_gamma) if gamma_gamma else None,
    }
    try:
        db[MODELS].insert_one(doc)
    except DuplicateKeyError:  # two fits finished together: take the next number
        return save(db, as_of, bgnbd, gamma_gamma)
    doc.pop("_id", None)
    return doc


def latest(db: Database) -> dict | None:
    return db[MODELS].find_one(sort=[("version", DESCENDING)], projection={"_id": 0})


def params(doc: dict) -> tuple[BGNBDParams, GammaGammaParams | None]:
    bgnbd = BGNBDParams(**doc["bgnbd"])
    gg = GammaGammaParams(**doc["gamma_gamma"]) if doc.get("gamma_gamma") else None
    return bgnbd, gg
