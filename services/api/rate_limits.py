"""Rate limits kept in Redis, with the `limits` library (the engine Flask-Limiter runs on).

`limits` directly rather than Flask-Limiter's decorators: the cached-profile fast path answers
before Flask (services.api.profile_hits), and a key's budget must be the same one whichever path
spends it; both paths call `check` here. Sliding-window counters: no double burst at a window's
edge, one Redis round trip to count and one to read the window for the headers.

A limit is a protection, not part of an answer: while Redis is unreachable requests are let
through (and logged), as the profile cache is bypassed then.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import redis
from limits import RateLimitItem, parse, storage, strategies

from shared.contracts.settings import get_settings
from shared.infra.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    headers: dict[str, str]


ALLOWED = Verdict(True, {})


@lru_cache(maxsize=1)
def _limiter() -> strategies.SlidingWindowCounterRateLimiter:
    settings = get_settings()
    store = storage.RedisStorage(settings.redis_url, key_prefix=f"{settings.cache_prefix}ratelimit",
                                 socket_connect_timeout=2, socket_timeout=2)
    return strategies.SlidingWindowCounterRateLimiter(store)


@lru_cache(maxsize=16)
def _item(limit: str) -> RateLimitItem:
    return parse(limit)


def check(limit: str, bucket: str, who: str) -> Verdict:
    """Count one request of `who` (a key id or an IP address) against `limit` ("10/minute") in
    `bucket` (signup, ingest, read). Headers as in draft-ietf-httpapi-ratelimit-headers, plus
    Retry-After when refused."""
    if not get_settings().rate_limits_enabled:
        return ALLOWED
    item = _item(limit)
    try:
        allowed = _limiter().hit(item, bucket, who)
        window = _limiter().get_window_stats(item, bucket, who)
    except redis.RedisError as exc:
        log.warning("rate_limit_unavailable", error=f"{type(exc).__name__}: {exc}"[:200])
        return ALLOWED
    reset = max(1, math.ceil(window.reset_time - time.time()))
    headers = {"RateLimit-Limit": str(item.amount), "RateLimit-Remaining": str(max(0, window.remaining)),
               "RateLimit-Reset": str(reset)}
    if not allowed:
        headers["Retry-After"] = str(reset)
    return Verdict(allowed, headers)


def refused(limit: str, bucket: str, who: str) -> Verdict | None:
    """Whether `who` is over `limit` in `bucket` now, without counting a request: the refusal (429
    headers with Retry-After) or None. For limits counted on an outcome (a failed key lookup)
    rather than on every request; Redis unreachable: None, as in `check`."""
    if not get_settings().rate_limits_enabled:
        return None
    item = _item(limit)
    try:
        if _limiter().test(item, bucket, who):
            return None
        window = _limiter().get_window_stats(item, bucket, who)
    except redis.RedisError as exc:
        log.warning("rate_limit_unavailable", error=f"{type(exc).__name__}: {exc}"[:200])
        return None
    reset = max(1, math.ceil(window.reset_time - time.time()))
    return Verdict(False, {"RateLimit-Limit": str(item.amount), "RateLimit-Remaining": "0",
                           "RateLimit-Reset": str(reset), "Retry-After": str(reset)})
