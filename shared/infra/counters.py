"""Pipeline totals kept in Redis: every worker process adds to one figure, and the API's
`/metrics` reads it (services.api.metrics). Counts only, never ids.

A Prometheus counter in each Celery worker process would need a scrape target per process;
these are a few INCRBYs per stored batch instead. They restart from zero with a Redis restart,
which Prometheus reads as a counter reset.
"""
from redis.exceptions import RedisError

from shared.infra.cache import get_redis, key, reply
from shared.infra.logging import get_logger

log = get_logger(__name__)
EVENTS_STORED = "events_stored"
EVENTS_DUPLICATE = "events_duplicate"
# Messages of Segment's /v1 API that Pulse refused inside an accepted batch (services.api.segment).
SEGMENT_REFUSED = "segment_messages_refused"
NAMES = (EVENTS_STORED, EVENTS_DUPLICATE, SEGMENT_REFUSED)
# Totals by label (a Redis hash): custom events that broke the tracking plan, by "<event type>|<refused|flagged>".
TRACKING_VIOLATIONS = "tracking_violations"


def _key(name: str) -> str:
    return key("counter", name)


def add(**amounts: int) -> None:
    """Add to the totals; a Redis outage loses the addition, never the work it counts."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        for name, amount in amounts.items():
            if amount:
                pipe.incrby(_key(name), amount)
        pipe.execute()
    except RedisError as exc:
        log.warning("counters_unavailable", error=type(exc).__name__)


def read() -> dict[str, int]:
    values = reply(get_redis().mget([_key(name) for name in NAMES]))
    return {name: int(value or 0) for name, value in zip(NAMES, values, strict=True)}


def add_labelled(name: str, amounts: dict[str, int]) -> None:
    """Add to a labelled total (one hash field per label); an outage loses the addition, as `add`."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        for label, amount in amounts.items():
            if amount:
                pipe.hincrby(_key(name), label, amount)
        pipe.execute()
    except RedisError as exc:
        log.warning("counters_unavailable", error=type(exc).__name__)


def read_labelled(name: str) -> dict[str, int]:
    values = reply(get_redis().hgetall(_key(name)))
    return {label.decode(): int(value) for label, value in values.items()}
