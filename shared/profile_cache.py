"""Cache-aside for profiles in Redis, with per-user versions so that nothing stale survives.

Keys: ``<prefix>profile:ver:<id>`` (an integer, bumped whenever the user's events change) and
``<prefix>profile:<id>:v<ver>`` (the JSON profile, TTL one hour). A writer reads the version
*before* it reads the data and writes under that version: if events arrive meanwhile the version
moves on and its now-stale result lands under a key nobody reads again (it expires by TTL).

Concurrent misses for one user compute once: the first takes a short lock, the others wait for
its result (bounded), so a burst of reads does not turn into a burst of computations.
"""
import json
import time
from collections.abc import Callable, Iterable

from shared.cache import get_redis, key
from shared.settings import get_settings

# One round trip for "current version and the profile under it".
_READ = """
local version = redis.call('GET', KEYS[1]) or '0'
return {version, redis.call('GET', ARGV[1] .. version)}
"""
LOCK_SECONDS = 10
WAIT_SECONDS = 5.0

_stats = {"hits": 0, "misses": 0, "waited": 0, "computed": 0}


def _version_key(user_id: int) -> str:
    return key("profile", "ver", user_id)


def _profile_prefix(user_id: int) -> str:
    return key("profile", user_id, "v")


def read(user_id: int) -> tuple[str, dict | None]:
    version, raw = get_redis().eval(_READ, 1, _version_key(user_id), _profile_prefix(user_id))
    version = version.decode() if isinstance(version, bytes) else str(version)
    return version, (json.loads(raw) if raw else None)


def write(user_id: int, version: str, profile: dict) -> None:
    get_redis().set(
        _profile_prefix(user_id) + version, json.dumps(profile, default=str), ex=get_settings().profile_cache_ttl
    )


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


def get_or_compute(user_id: int, compute: Callable[[], dict | None]) -> tuple[dict | None, bool]:
    """(profile, hit). `compute` runs at most once per user and version across all processes,
    except when the lock holder takes longer than WAIT_SECONDS."""
    version, cached = read(user_id)
    if cached is not None:
        _stats["hits"] += 1
        return cached, True
    _stats["misses"] += 1
    redis = get_redis()
    lock = key("profile", "lock", user_id, version)
    locked = bool(redis.set(lock, "1", nx=True, ex=LOCK_SECONDS))
    if not locked:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.01)
            now_version, cached = read(user_id)
            if cached is not None:
                _stats["waited"] += 1
                return cached, False
            if now_version != version:
                version = now_version  # events arrived: the holder's result is stale, compute afresh
                break
    try:
        _stats["computed"] += 1
        profile = compute()
        if profile is not None:
            write(user_id, version, profile)
        return profile, False
    finally:
        if locked:
            redis.delete(lock)


def stats() -> dict[str, int]:
    return dict(_stats)
