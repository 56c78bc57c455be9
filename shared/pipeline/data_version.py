"""One number that changes whenever what the insight queries read changes (issue 24).

Funnels, retention and lifecycle cache each answer under (query, data version): the worker bumps
the version after a batch's person_events commit, a merge moves a visitor, a signup adds a user
(retention by signup), an erasure deletes a person, a rescoring rewrites profiles (segments, RFM
codes), a rebuild recounts; a query that starts after the bump misses and recomputes. Redis INCR
after the commit, not a Postgres row in the transaction: one row every batch updates would
serialise all workers' commits. The cost of that choice: a process that dies between its commit
and the bump leaves answers cached under the old version until the next bump or the cache TTL
(INSIGHT_CACHE_SECONDS), whichever comes first.
"""
from redis.exceptions import RedisError

from shared.infra.cache import get_redis, key, reply
from shared.infra.logging import get_logger

log = get_logger(__name__)

_KEY = ("insights", "data_version")


def bump() -> int:
    """Mark the insight data changed. Returns the new version."""
    return int(reply(get_redis().incr(key(*_KEY))))


def current() -> int:
    """The version answers computed now are cached under (0 before the first change)."""
    raw = reply(get_redis().get(key(*_KEY)))
    return int(raw) if raw is not None else 0


# Bumps that failed in this process since it started (each is also logged).
failed_bumps = 0


def changed(what: str) -> int | None:
    """`bump` after a commit that changed what insights read, never raising: the change is
    committed, so a Redis error here must not fail the task (a retry would re-run its side effects:
    a batch's rescoring marks and ingestion counters, a merge's next pages) nor lose or duplicate
    anything. Logged and counted instead; what it costs is answers cached under the old version
    until the next bump or INSIGHT_CACHE_SECONDS, as a process dying before its bump does.
    Returns the new version, None when Redis did not answer."""
    global failed_bumps
    try:
        return bump()
    except RedisError as exc:
        failed_bumps += 1
        log.warning("data_version_bump_failed", what=what, error=type(exc).__name__, failed_bumps=failed_bumps)
        return None
