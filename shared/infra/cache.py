"""Redis access for the profile cache (keys under CACHE_PREFIX)."""
from functools import lru_cache

import redis

from shared.contracts.settings import get_settings


@lru_cache(maxsize=4)
def get_redis(url: str | None = None) -> redis.Redis:
    return redis.Redis.from_url(
        url or get_settings().redis_url,
        socket_connect_timeout=2,
        socket_timeout=2,
        health_check_interval=30,
    )


def key(*parts: object) -> str:
    return get_settings().cache_prefix + ":".join(str(p) for p in parts)
