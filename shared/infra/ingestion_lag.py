"""Ingestion lag: how long an event took from the API receiving it to the worker storing it,
as one histogram kept in Redis that every worker process adds to and the API's `/metrics` reads
(`pulse_ingestion_lag_seconds`, services.api.metrics), as shared.infra.counters does for totals.

Each stored batch adds its events' lags in one MULTI: a bucket count per bound (not cumulative;
the reader accumulates) and the sum, so a scrape never sees buckets without their sum. A lag
is the worker's clock minus the API's (`received_at`, shared.contracts.schemas): clocks of two
hosts that disagree could make it negative, which is counted as 0 (in the first bucket) rather
than lost. A Redis outage loses the observation, never the events.
"""
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from shared.infra.cache import get_redis, key, reply
from shared.infra.logging import get_logger

log = get_logger(__name__)
# Upper bounds (seconds) of the buckets, then +Inf: from a worker keeping up (milliseconds) to a
# backlog after an outage (a minute and more).
BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SUM = "sum"


def _key() -> str:
    return key("histogram", "ingestion_lag_seconds")


def bucket_counts(lags: Sequence[float]) -> list[int]:
    """How many of the lags fall into each bucket: `le` BOUNDS[i] (a lag equal to a bound is in
    that bound's bucket, Prometheus' `le`), then +Inf. Not cumulative. Negative lags count as 0."""
    values = np.maximum(np.asarray(lags, dtype=np.float64), 0.0)
    positions = np.searchsorted(np.asarray(BOUNDS), values, side="left")
    return [int(n) for n in np.bincount(positions, minlength=len(BOUNDS) + 1)]


def lags(docs: Iterable[dict[str, Any]], stored_at: datetime) -> list[float]:
    """Seconds from each stored event document's `received_at` to `stored_at` (a naive instant is UTC)."""
    return [(stored_at - (received if received.tzinfo else received.replace(tzinfo=UTC))).total_seconds()
            for received in (doc["received_at"] for doc in docs)]


def observe(lags: Sequence[float]) -> None:
    """Add the lags (seconds) of a stored batch's events."""
    if not len(lags):
        return
    counts = bucket_counts(lags)
    total = float(np.maximum(np.asarray(lags, dtype=np.float64), 0.0).sum())
    try:
        pipe = get_redis().pipeline(transaction=True)
        name = _key()
        for index, count in enumerate(counts):
            if count:
                pipe.hincrby(name, str(index), count)
        pipe.hincrbyfloat(name, _SUM, total)
        pipe.execute()
    except RedisError as exc:
        log.warning("ingestion_lag_unavailable", error=type(exc).__name__)


@dataclass(frozen=True)
class Histogram:
    buckets: list[tuple[float, int]]  # (upper bound, cumulative count), +Inf last
    sum: float
    count: int


def read() -> Histogram:
    stored = reply(get_redis().hgetall(_key()))
    values = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in stored.items()}
    running = 0
    buckets: list[tuple[float, int]] = []
    for index, bound in enumerate((*BOUNDS, float("inf"))):
        running += int(values.get(str(index), 0))
        buckets.append((bound, running))
    # The count is the +Inf bucket's: Prometheus' _count, equal to it by definition.
    return Histogram(buckets, float(values.get(_SUM, 0.0)), running)
