"""Redis access for the profile cache (keys under CACHE_PREFIX)."""
from collections.abc import Awaitable
from functools import lru_cache
from typing import TypeVar, cast

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


_Reply = TypeVar("_Reply")


def reply(value: Awaitable[_Reply] | _Reply) -> _Reply:
    """A reply of the synchronous client, typed as what it is. redis-py types its commands' replies
    as `Awaitable[T] | T` (one signature for the sync and the asyncio client); the sync `redis.Redis`
    get_redis() returns never hands back an awaitable. A cast, so nothing changes at run time."""
    return cast(_Reply, value)
