"""Reading purchases out of MongoDB `events` as numpy arrays: the raw log.

Profiles, fits and validations read the per-customer summaries (shared.pipeline.summaries), never this.
It serves tests and benchmarks that recompute everything from the log to compare.
"""
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pymongo.database import Database

from shared.infra.mongo import EVENTS


@dataclass(frozen=True)
class PurchaseLog:
    user_id: np.ndarray  # int64
    timestamp: np.ndarray  # datetime64[ms], UTC
    amount: np.ndarray  # float64
    category: np.ndarray  # str (object)

    def __len__(self) -> int:
        return int(self.user_id.size)

    def until(self, moment: datetime) -> "PurchaseLog":
        keep = self.timestamp <= np.datetime64(moment.astimezone(UTC).replace(tzinfo=None), "ms")
        return PurchaseLog(self.user_id[keep], self.timestamp[keep], self.amount[keep], self.category[keep])


def load_purchases(db: Database[dict[str, Any]], user_ids: list[int] | None = None) -> PurchaseLog:
    """Every purchase event (of the given users, or of every user): one query. Users only: a
    visitor's guest purchase, stored under its negative id until identified, is nobody's as a
    customer yet; it counts once merged into its user, as in the summaries."""
    query: dict[str, Any] = {"event_type": "user_purchase"}
    if user_ids is not None:
        query["user_id"] = {"$in": [int(u) for u in user_ids]}
    else:
        query["user_id"] = {"$gt": 0}
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
