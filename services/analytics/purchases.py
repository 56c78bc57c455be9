"""Reading the purchase history out of MongoDB in bulk, as numpy arrays.

One query per population or per batch of users, never one per user per feature. The population
log is kept per process for a short while (population-relative statistics: RFM quintiles and
"similar users" move slowly), while the users being rescored are always read fresh.
"""
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from pymongo.database import Database

from shared.mongo import EVENTS

POPULATION_TTL_SECONDS = 60.0


@dataclass(frozen=True)
class PurchaseLog:
    user_id: np.ndarray  # int64
    timestamp: np.ndarray  # datetime64[ms], UTC
    amount: np.ndarray  # float64
    category: np.ndarray  # str (object)

    def __len__(self) -> int:
        return int(self.user_id.size)

    def without(self, user_ids: np.ndarray) -> "PurchaseLog":
        keep = ~np.isin(self.user_id, user_ids)
        return PurchaseLog(self.user_id[keep], self.timestamp[keep], self.amount[keep], self.category[keep])

    def concat(self, other: "PurchaseLog") -> "PurchaseLog":
        return PurchaseLog(
            np.concatenate([self.user_id, other.user_id]),
            np.concatenate([self.timestamp, other.timestamp]),
            np.concatenate([self.amount, other.amount]),
            np.concatenate([self.category, other.category]),
        )

    def until(self, moment: datetime) -> "PurchaseLog":
        keep = self.timestamp <= np.datetime64(moment.astimezone(UTC).replace(tzinfo=None), "ms")
        return PurchaseLog(self.user_id[keep], self.timestamp[keep], self.amount[keep], self.category[keep])


def load_purchases(db: Database, user_ids: list[int] | None = None) -> PurchaseLog:
    query: dict = {"event_type": "user_purchase"}
    if user_ids is not None:
        query["user_id"] = {"$in": [int(u) for u in user_ids]}
    cursor = db[EVENTS].find(
        query,
        {"_id": 0, "user_id": 1, "timestamp": 1, "metadata.price": 1, "metadata.category": 1},
        batch_size=10_000,
    )
    uids, stamps, amounts, categories = [], [], [], []
    for doc in cursor:
        uids.append(doc["user_id"])
        stamps.append(doc["timestamp"].astimezone(UTC).replace(tzinfo=None))
        meta = doc.get("metadata") or {}
        amounts.append(float(meta.get("price", 0.0)))
        categories.append(str(meta.get("category", "")))
    return PurchaseLog(
        np.asarray(uids, dtype=np.int64),
        np.asarray(stamps, dtype="datetime64[ms]"),
        np.asarray(amounts, dtype=np.float64),
        np.asarray(categories, dtype=object),
    )


class _PopulationCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, PurchaseLog]] = {}

    def get(self, db: Database) -> PurchaseLog:
        key = f"{db.client.address}/{db.name}"
        with self._lock:
            entry = self._entries.get(key)
            if entry and time.monotonic() - entry[0] < POPULATION_TTL_SECONDS:
                return entry[1]
        log = load_purchases(db)
        with self._lock:
            self._entries[key] = (time.monotonic(), log)
        return log

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


population_cache = _PopulationCache()


def purchases_for_scoring(db: Database, user_ids: list[int]) -> PurchaseLog:
    """The population log with the given users' rows replaced by a fresh read."""
    fresh = load_purchases(db, user_ids)
    return population_cache.get(db).without(np.asarray(user_ids, dtype=np.int64)).concat(fresh)
