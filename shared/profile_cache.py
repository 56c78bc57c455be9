"""Cache-aside for profiles in Redis, with per-user versions so that nothing stale survives.

Keys: ``<prefix>profile:ver:<id>`` (an integer), ``<prefix>profile:writing:<id>`` (how many event
writes for the user are in flight) and ``<prefix>profile:<id>`` (``<ver>:<JSON profile>``, TTL one
hour: the profile and the version it was computed under). A read is one MGET of the version and
the profile, a hit when the two versions agree: one plain command, no script on the hot path.
Whoever stores events for a user brackets the MongoDB write with `begin_events_write` and
`end_events_write`: both bump the version, so no profile cached before or during the write is
reachable afterwards. A profile is cached only if, atomically at the moment of caching, the version
is still the one read *before* the data was read and no event write is in flight; otherwise the
result is served but not cached. Hence a read that starts after events are stored never sees a
profile without them.

Concurrent misses for one user compute once: the first takes a short lock, the others wait for
its result (bounded), so a burst of reads does not turn into a burst of computations.
"""
import threading
import time
from functools import lru_cache
from collections.abc import Callable, Iterable

from prometheus_client import Counter
from redis import exceptions as redis_errors

from shared import personal
from shared.cache import get_redis, key
from shared.settings import get_settings

# Cache only when nothing moved: same version as before the data was read, no write in flight.
_WRITE_IF_CURRENT = """
local version = redis.call('GET', KEYS[1]) or '0'
local writing = tonumber(redis.call('GET', KEYS[2]) or '0')
if version == ARGV[1] and writing <= 0 then
  redis.call('SET', KEYS[3], version .. ':' .. ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
# An event write that dies half-way must not disable caching for its users forever.
WRITING_TTL_SECONDS = 600
LOCK_SECONDS = 10

_stats = {"hits": 0, "misses": 0, "waited": 0, "computed": 0, "bypassed": 0}
_stats_lock = threading.Lock()
# The same counts for Prometheus (services.api.metrics), added up over the API's processes.
REQUESTS = Counter("pulse_profile_cache_requests_total",
                   "Profile reads by what the cache did: hits, misses (then waited for another request's "
                   "computation or computed), bypassed (Redis unreachable)", ["result"])


def _count(name: str) -> None:
    with _stats_lock:  # the API server's threads share these counters
        _stats[name] += 1
    if get_settings().metrics_enabled:
        REQUESTS.labels(name).inc()


def _version_key(user_id: int) -> str:
    return key("profile", "ver", user_id)


def _profile_key(user_id: int) -> str:
    return key("profile", user_id)


@lru_cache(maxsize=8)
def _script(source: str, redis_client):
    # register_script runs EVALSHA (the script body is sent once, not on every read).
    return redis_client.register_script(source)


def read(user_id: int) -> tuple[str, str | None]:
    """(current version, the cached profile JSON under it or None). The JSON is returned as stored
    so a hit can go to the client without being parsed and serialised again."""
    version, raw = get_redis().mget([_version_key(user_id), _profile_key(user_id)])
    version = version.decode() if version else "0"
    if raw:
        cached_version, _, body = raw.decode().partition(":")
        if cached_version == version:
            return version, body
    return version, None


def cached(user_id: int) -> str | None:
    """The cached profile JSON if it is current (counted as a hit), else None (not counted: the
    caller goes on to `get_or_compute`, which counts what happens next)."""
    _, body = read(user_id)
    if body is not None:
        _count("hits")
    return body


def _writing_key(user_id: int) -> str:
    return key("profile", "writing", user_id)


def dumps(profile: dict) -> str:
    """The profile as cached and as `get_or_compute` returns it: packed with the ranges of its
    personal members (shared.personal), so that each request is answered the view its key may see
    (`shared.personal.profile_view`) from the one entry, without parsing it."""
    return personal.pack_profile(profile)


def write(user_id: int, version: str, profile: dict | str) -> bool:
    """Cache `profile`, computed from data read after `version` was read, if it is still current."""
    redis = get_redis()
    body = profile if isinstance(profile, str) else dumps(profile)
    return bool(
        _script(_WRITE_IF_CURRENT, redis)(
            keys=[_version_key(user_id), _writing_key(user_id), _profile_key(user_id)],
            args=[version, body, get_settings().profile_cache_ttl],
        )
    )


def write_many(entries: dict[int, tuple[str, dict | str]]) -> int:
    """`write` for many users in one round trip ({user id: (version, profile)}). Returns how many
    were cached."""
    if not entries:
        return 0
    redis = get_redis()
    script = _script(_WRITE_IF_CURRENT, redis)
    ttl = get_settings().profile_cache_ttl
    pipe = redis.pipeline(transaction=False)
    for user_id, (version, profile) in entries.items():
        body = profile if isinstance(profile, str) else dumps(profile)
        script(keys=[_version_key(user_id), _writing_key(user_id), _profile_key(user_id)],
               args=[version, body, ttl], client=pipe)
    return sum(1 for cached in pipe.execute() if cached)


def current_versions(user_ids: Iterable[int]) -> dict[int, str]:
    ids = list(user_ids)
    values = get_redis().mget([_version_key(u) for u in ids]) if ids else []
    return {u: (v.decode() if v else "0") for u, v in zip(ids, values)}


def invalidate(user_ids: Iterable[int]) -> None:
    """Bump each user's version: every cached profile computed before now is unreachable."""
    pipe = get_redis().pipeline(transaction=False)
    for user_id in user_ids:
        pipe.incr(_version_key(user_id))
    pipe.execute()


def begin_events_write(user_ids: Iterable[int]) -> None:
    pipe = get_redis().pipeline(transaction=True)
    for user_id in user_ids:
        pipe.incr(_version_key(user_id))
        pipe.incr(_writing_key(user_id))
        pipe.expire(_writing_key(user_id), WRITING_TTL_SECONDS)
    pipe.execute()


def end_events_write(user_ids: Iterable[int]) -> None:
    pipe = get_redis().pipeline(transaction=True)
    for user_id in user_ids:
        pipe.incr(_version_key(user_id))
        pipe.decr(_writing_key(user_id))
    pipe.execute()


HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"


def get_or_compute(user_id: int, compute: Callable[[], dict | None]) -> tuple[str | None, str]:
    """(profile JSON, HIT | MISS | BYPASS). Concurrent misses for one user and version share one
    computation: the first takes a short lock, the others wait for its result while it holds the
    lock (at most LOCK_SECONDS: the lock expires if its holder dies). With Redis unreachable the
    profile is computed and answered without the cache (BYPASS): a cache is an optimisation, not
    a dependency of the answer."""
    try:
        return _get_or_compute(user_id, compute)
    except redis_errors.RedisError:
        _count("bypassed")
        profile = compute()
        return (dumps(profile) if profile is not None else None), BYPASS


def _get_or_compute(user_id: int, compute: Callable[[], dict | None]) -> tuple[str | None, str]:
    version, cached = read(user_id)
    if cached is not None:
        _count("hits")
        return cached, HIT
    _count("misses")
    redis = get_redis()
    lock = key("profile", "lock", user_id, version)
    locked = bool(redis.set(lock, "1", nx=True, ex=LOCK_SECONDS))
    if not locked:
        deadline = time.monotonic() + LOCK_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.005)
            now_version, cached = read(user_id)
            if cached is None and now_version == version and not redis.exists(lock):
                # The holder let go: it cached its result just now, or could not (an event write
                # was in flight); read once more to tell which.
                now_version, cached = read(user_id)
                if cached is None:
                    break
            if cached is not None:
                _count("waited")
                return cached, MISS
            if now_version != version:
                version = now_version  # events arrived: the holder's result is stale anyway
                break
    else:
        # A holder may have cached its result and let go between our read and our lock.
        _, cached = read(user_id)
        if cached is not None:
            redis.delete(lock)
            _count("waited")
            return cached, MISS
    try:
        _count("computed")
        profile = compute()
        if profile is None:
            return None, MISS
        body = dumps(profile)
        try:
            write(user_id, version, body)
        except redis_errors.RedisError:
            return body, BYPASS  # computed already: served, not cached
        return body, MISS
    finally:
        if locked:
            try:
                redis.delete(lock)
            except redis_errors.RedisError:
                pass  # it expires by itself (LOCK_SECONDS)


def stats() -> dict[str, int]:
    return dict(_stats)
