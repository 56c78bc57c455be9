"""Cache-aside for profiles in Redis; what decides whether a cached profile is current lives in
Postgres, where it cannot go back in time.

Each user has a version in Postgres (`profile_versions`): a random token, replaced in the same
transaction as every change to the data a profile is computed from (the worker's event batches,
`bump`), and deleted with the user (ON DELETE CASCADE). A user whose data has not changed since
they were created has no row yet, and the version INITIAL: it can occur only before their first
change, so it never repeats either. Redis holds ``<prefix>profile:<shape>:<id>`` =
``<version>:<JSON profile>`` (TTL one hour; the shape: `PROFILE_SHAPE`): a profile and the version
read *before* its data was read. A cached profile is served only when its version is the user's
current one in Postgres, read on every hit (one primary-key read over a pooled connection).

Why this holds whatever Redis does: a token never repeats (random, 122 bits), so an old body can
never carry a current version, whether Redis restarts empty (FLUSHALL, no persistence), restarts
from an older snapshot, or fails over to a replica that missed the last writes: the body is then
a miss and is computed again. An erased user has no version at all, so nothing cached for them is
ever served, whatever Redis still holds. And a read that starts after a change committed reads the
new version: anything computed from older data carries an older one. A cache write therefore needs
no check against Redis (a late write of an older result is simply a miss later). Versions live in
Postgres and not in a per-process map fed by LISTEN/NOTIFY because a notification arrives some
time after the commit: until then a process would serve the profile without the change as a HIT,
and a listener that reconnects cannot tell what it missed. The hit's Postgres read is measured by
bench/profiles.py.

While Postgres is unreachable nothing can be verified, so nothing is served from the cache (the
view answers 503, as every other read does then); while Redis is unreachable profiles are computed
and answered without it (BYPASS).

Concurrent misses for one user compute once: the first takes a short lock, the others wait for
its result (bounded), so a burst of reads does not turn into a burst of computations.
"""
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from types import EllipsisType
from typing import Any

import psycopg
from prometheus_client import Counter
from redis import exceptions as redis_errors
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shared.contracts import personal
from shared.contracts.settings import get_settings
from shared.infra.cache import get_redis, key, reply
from shared.infra.db import session_scope

LOCK_SECONDS = 10
# Idle connections the hit path keeps per process (more are opened under a burst, then closed).
POOL_IDLE = 8

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


# The shape of the cached profile. Bump it when the profile's fields change (added, removed,
# renamed, a different meaning): a profile cached by the code before a deploy carries the user's
# current version all the same (no data of theirs changed), so only its key can tell it apart;
# under the new key it is a miss, and it expires with its TTL. Erasure deletes every shape's key
# (`shape_keys`). "s2": issue 23 added `sessions` (s1 was the unversioned key("profile", id)).
PROFILE_SHAPE = "s2"
_OLDER_SHAPES: tuple[str, ...] = ()  # besides the unversioned key


def _profile_key(user_id: int) -> str:
    return key("profile", PROFILE_SHAPE, user_id)


def shape_keys(user_id: int) -> list[str]:
    """Every key the user's profile may be cached under: the current shape's, the older shapes',
    and the unversioned one of the code before shapes (cached up to a TTL before a deploy)."""
    return [_profile_key(user_id), *(key("profile", shape, user_id) for shape in _OLDER_SHAPES),
            key("profile", user_id)]


# ----------------------------------------------------------------------------- versions (Postgres)

_BUMP = text(
    # Sorted, so two workers bumping overlapping users lock the rows in one order; only users that
    # exist (an event of an erased user changes nothing, as in shared.pipeline.summaries).
    "INSERT INTO profile_versions (user_id, version) SELECT u, gen_random_uuid() "
    "FROM unnest(CAST(:ids AS integer[])) AS u JOIN users ON users.id = u ORDER BY u "
    "ON CONFLICT (user_id) DO UPDATE SET version = EXCLUDED.version"
)
INITIAL = "initial"
# From users: no row is no user (erased, or never was), whose profile is never served from the cache.
# (INITIAL spelled out: statements are constants, which bandit's SQL check can tell.)
_VERSIONS = text("SELECT u.id AS user_id, coalesce(v.version::text, 'initial') AS version FROM users u "
                 "LEFT JOIN profile_versions v ON v.user_id = u.id WHERE u.id = ANY(CAST(:ids AS integer[]))")
_VERSION_OF = ("SELECT coalesce(v.version::text, 'initial') FROM users u "
               "LEFT JOIN profile_versions v ON v.user_id = u.id WHERE u.id = %s")


def bump(session: Session, user_ids: Iterable[int]) -> None:
    """A new version for each user, in the caller's transaction (the one that changes their data):
    once it commits, nothing cached before is served."""
    ids = sorted(set(int(u) for u in user_ids))
    if ids:
        session.execute(_BUMP, {"ids": ids})


def invalidate(user_ids: Iterable[int]) -> None:
    """`bump` in a transaction of its own (the benchmarks and the demo force a miss with it)."""
    with session_scope() as session:
        bump(session, user_ids)


def versions(session: Session, user_ids: Iterable[int]) -> dict[int, str]:
    """The current versions (read before the data a profile is computed from). A user that does
    not exist (erased) is absent: nothing computed for them is cached."""
    ids = sorted(set(int(u) for u in user_ids))
    if not ids:
        return {}
    return {row.user_id: row.version for row in session.execute(_VERSIONS, {"ids": ids})}


class _Connections:
    """The hit path's own autocommit connections: one round trip per read (a pooled SQLAlchemy
    session adds a pre-ping, BEGIN and ROLLBACK around it), the statement prepared once per
    connection. A connection that fails is dropped and the read tried once on a new one, so a
    Postgres restart costs one retry, not an error."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self._idle: queue.SimpleQueue[psycopg.Connection] = queue.SimpleQueue()
        self._pid = os.getpid()

    def _connect(self) -> psycopg.Connection:
        url = make_url(get_settings().database_url).set(drivername="postgresql")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True, connect_timeout=5)

    def version(self, user_id: int) -> str | None:
        if os.getpid() != self._pid:  # forked: the parent's sockets are not ours
            self._start()
        for attempt in (1, 2):
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                connection = None
            try:
                if connection is None:
                    connection = self._connect()
                row = connection.execute(_VERSION_OF, (user_id,), prepare=True).fetchone()
            except psycopg.OperationalError as exc:
                if connection is not None:
                    connection.close()
                if attempt == 2:
                    # As SQLAlchemy wraps it: the API answers 503 for it (shared.infra.retry).
                    raise OperationalError(_VERSION_OF, (user_id,), exc) from exc
                continue
            if self._idle.qsize() < POOL_IDLE:
                self._idle.put(connection)
            else:
                connection.close()
            return row[0] if row else None
        return None  # not reached


_connections = _Connections()


def current_version(user_id: int) -> str | None:
    """The user's current version (None: no such user), read from Postgres now."""
    return _connections.version(user_id)


# ----------------------------------------------------------------------------- the cache (Redis)

def _split(raw: bytes | None) -> tuple[str | None, str | None]:
    if not raw:
        return None, None
    version, _, body = raw.decode().partition(":")
    return version, body


def read(user_id: int) -> tuple[str | None, str | None]:
    """(current version, the cached profile JSON if it was computed under it, else None). The JSON
    is returned as stored so a hit can go to the client without being parsed and serialised again."""
    version = current_version(user_id)
    if version is None:
        return None, None
    cached_version, body = _split(reply(get_redis().get(_profile_key(user_id))))
    return version, (body if cached_version == version else None)


def profile_key(user_id: int) -> str:
    """Where the user's profile is cached (for a caller that reads it along with other keys)."""
    return _profile_key(user_id)


def cached(user_id: int, raw: bytes | None | EllipsisType = ...) -> str | None:
    """The cached profile JSON if it is current (counted as a hit), else None (not counted: the
    caller goes on to `get_or_compute`, which counts what happens next). `raw`: what Redis holds
    at `profile_key`, when the caller has read it already. Redis first: a user with nothing cached
    costs no Postgres read here."""
    # isinstance rather than `raw is ...`: mypy narrows only the former.
    stored: bytes | None = reply(get_redis().get(_profile_key(user_id))) if isinstance(raw, EllipsisType) else raw
    cached_version, body = _split(stored)
    if body is None or cached_version != current_version(user_id):
        return None
    _count("hits")
    return body


def dumps(profile: dict[str, Any]) -> str:
    """The profile as cached and as `get_or_compute` returns it: packed with the ranges of its
    personal members (shared.contracts.personal), so that each request is answered the view its key may see
    (`shared.contracts.personal.profile_view`) from the one entry, without parsing it."""
    return personal.pack_profile(profile)


def write(user_id: int, version: str | None, profile: dict[str, Any] | str) -> bool:
    """Cache `profile`, computed from data read after `version` was read. Nothing to check: if the
    version has moved on meanwhile, the entry is a miss for whoever reads it."""
    if version is None:
        return False
    body = profile if isinstance(profile, str) else dumps(profile)
    get_redis().set(_profile_key(user_id), f"{version}:{body}", ex=get_settings().profile_cache_ttl)
    return True


def write_many(entries: dict[int, tuple[str | None, dict[str, Any] | str]]) -> int:
    """`write` for many users in one round trip ({user id: (version, profile)}). Returns how many
    were cached."""
    ttl = get_settings().profile_cache_ttl
    pipe = get_redis().pipeline(transaction=False)
    written = 0
    for user_id, (version, profile) in entries.items():
        if version is None:
            continue
        body = profile if isinstance(profile, str) else dumps(profile)
        pipe.set(_profile_key(user_id), f"{version}:{body}", ex=ttl)
        written += 1
    if written:
        pipe.execute()
    return written


HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"


def get_or_compute(user_id: int, compute: Callable[[], dict[str, Any] | None]) -> tuple[str | None, str]:
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


def _get_or_compute(user_id: int, compute: Callable[[], dict[str, Any] | None]) -> tuple[str | None, str]:
    version, cached = read(user_id)
    if cached is not None:
        _count("hits")
        return cached, HIT
    _count("misses")
    if version is None:
        # No such user (the compute says 404, or finds them created since): nothing to cache
        # under, so nothing to share either.
        _count("computed")
        profile = compute()
        return (dumps(profile) if profile is not None else None), MISS
    redis = get_redis()
    lock = key("profile", "lock", user_id, version)
    locked = bool(redis.set(lock, "1", nx=True, ex=LOCK_SECONDS))
    if not locked:
        deadline = time.monotonic() + LOCK_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.005)
            now_version, cached = read(user_id)
            if cached is None and now_version == version and not redis.exists(lock):
                # The holder let go: it cached its result just now, or failed; read once more
                # to tell which.
                now_version, cached = read(user_id)
                if cached is None:
                    break
            if cached is not None:
                _count("waited")
                return cached, MISS
            if now_version != version:
                version = now_version  # the data changed: the holder's result is stale anyway
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
