"""Redis rolled back to an earlier copy of every key Pulse holds in it (this run's prefix), for the
adversarial tests of the cache and the dashboard."""
from __future__ import annotations

import redis as redis_lib

from tests.conftest import TEST_ENV


def pulse_keys(redis: redis_lib.Redis, prefix: str = TEST_ENV["CACHE_PREFIX"]) -> list[bytes]:
    return list(redis.scan_iter(match=prefix + "*", count=1000))


def snapshot(redis: redis_lib.Redis) -> dict[bytes, tuple[bytes, int]]:
    """Every key Pulse holds (this run's prefix), as DUMP gives it, with its time to live."""
    taken = {}
    for name in pulse_keys(redis):
        dumped, ttl = redis.dump(name), redis.pttl(name)
        if dumped is not None:
            taken[name] = (dumped, ttl)
    return taken


def roll_back(redis: redis_lib.Redis, taken: dict[bytes, tuple[bytes, int]]) -> None:
    """Redis as it was at `snapshot`: what was written since is gone, what was deleted is back
    (as a restart from that snapshot, or a failover to a replica that stopped there, leaves it)."""
    current = pulse_keys(redis)
    if current:
        redis.delete(*current)
    for name, (dumped, ttl) in taken.items():
        redis.restore(name, max(ttl, 0), dumped, replace=True)
