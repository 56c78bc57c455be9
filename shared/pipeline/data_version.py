"""One number that changes whenever what the insight queries read changes (issue 24).

Funnels, retention and lifecycle cache each answer under (query, data version): the worker bumps
the version after a batch's person_events commit, a merge moves a visitor, an erasure deletes a
person, a rescoring changes a segment, a rebuild recounts; a query that starts after the bump
misses and recomputes. Redis INCR after the commit, not a Postgres row in the transaction: one row
every batch updates would serialise all workers' commits. The cost of that choice: a process that
dies between its commit and the bump leaves answers cached under the old version until the next
bump or the cache TTL (INSIGHT_CACHE_SECONDS), whichever comes first.
"""
from shared.infra.cache import get_redis, key, reply

_KEY = ("insights", "data_version")


def bump() -> int:
    """Mark the insight data changed. Returns the new version."""
    return int(reply(get_redis().incr(key(*_KEY))))


def current() -> int:
    """The version answers computed now are cached under (0 before the first change)."""
    raw = reply(get_redis().get(key(*_KEY)))
    return int(raw) if raw is not None else 0
