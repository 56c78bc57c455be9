"""Coalesced rescoring: many event batches for overlapping users become one analytics run.

The worker adds the users whose events it stored (and every new signup) to a Redis set and
schedules one drain task, unless one is already scheduled. A drain takes exactly the users who
were pending when it started: it renames the set to one of its own, so users changed meanwhile
wait for the next drain, scheduled `rescore_delay_seconds` after them. The drain's users are
rescored in chunks, one task per chunk, so every analytics worker process takes a share. Under a
burst of ingestion this turns "one rescoring of ~N users per stored chunk" into one per delay
(draining until the set was empty rescored the same users after every chunk, and those reads
and writes competed with the burst for MongoDB: the pipeline ran up to 2x slower).

API reads do not depend on it: the profile cache is invalidated synchronously by the writer
(see shared.pipeline.profile_cache), so they are fresh even before the drain runs. The stored profile
documents do, and the Redis set is not durable (a Redis restart empties it, a killed analytics
worker loses the users it had taken). So the truth is kept in Postgres too: every change adds
the user to `rescore_pending` in the same transaction as the summaries (`record_pending`), with
a new change number; a rescoring deletes a user's row only if its change number is still the one
it read before computing (`changes_seen`, `clear_seen`), so a change it did not see stays
pending. `sweep` (Celery beat, every minute) puts users pending for longer than a drain should
take back into the Redis set: whatever Redis or a killed worker lost is rescored within minutes.
"""
import math
import uuid
from collections.abc import Callable, Iterable

from opentelemetry import trace
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.contracts.settings import get_settings
from shared.infra.cache import get_redis, key, reply

SCHEDULED_TTL_SECONDS = 120  # a lost drain message must not block rescoring for long
DRAIN_TTL_SECONDS = 24 * 3600  # a drain whose workers all died must not keep its set forever


def _pending() -> str:
    return key("rescore", "pending")


def _scheduled() -> str:
    return key("rescore", "scheduled")


def _drains() -> str:
    """The names of drain sets that may still hold users (for `forget`)."""
    return key("rescore", "drains")


def coalesce(user_ids: Iterable[int]) -> list[int]:
    """The users of a change, each once, in ascending order: a user named by many events of a
    batch is one member of the pending set, and one row of `rescore_pending`, locked in the order
    every writer locks them (two workers upserting overlapping users cannot deadlock)."""
    return sorted(set(int(u) for u in user_ids))


def chunk_tasks(pending: int, chunk: int) -> int:
    """How many tasks a drain of `pending` users sends besides the one that started it (which
    rescores the first chunk itself): one per further chunk of `chunk` users, none for an empty or
    a one-chunk drain."""
    return max(0, math.ceil(pending / chunk) - 1)


def mark_changed(user_ids: Iterable[int], schedule: Callable[[float], None]) -> bool:
    """Record changed users; call `schedule(delay)` when no drain is scheduled yet."""
    ids = coalesce(user_ids)
    if not ids:
        return False
    get_redis().sadd(_pending(), *ids)
    scheduled = _schedule_once(schedule)
    # The drain that rescores these users belongs to the trace of the change that scheduled it
    # (shared.infra.tracing): say so on this change's span, where its trace stops short of analytics.
    trace.get_current_span().set_attribute("pulse.rescore.joined_scheduled_drain", not scheduled)
    return scheduled


def _schedule_once(schedule: Callable[[float], None]) -> bool:
    redis = get_redis()
    if redis.set(_scheduled(), "1", nx=True, ex=SCHEDULED_TTL_SECONDS):
        try:
            schedule(get_settings().rescore_delay_seconds)
        except BaseException:
            redis.delete(_scheduled())  # let the retried task schedule it
            raise
        return True
    return False


def start_drain() -> tuple[str | None, int]:
    """Move every pending user into a set of this drain's own and re-open scheduling, so that
    users changed from now on wait for (and schedule) the next drain. Returns the drain's key and
    how many users it holds, or (None, 0) when nobody is pending."""
    redis = get_redis()
    redis.delete(_scheduled())
    drain = key("rescore", "draining", uuid.uuid4().hex)
    try:
        redis.rename(_pending(), drain)
    except ResponseError:  # no such key: nothing pending
        return None, 0
    redis.expire(drain, DRAIN_TTL_SECONDS)
    redis.sadd(_drains(), drain)
    return drain, int(reply(redis.scard(drain)))


def take(drain: str, batch: int) -> list[int]:
    """Take up to `batch` users of a drain."""
    return sorted(int(u) for u in (reply(get_redis().spop(drain, batch)) or []))


def put_back(user_ids: Iterable[int], schedule: Callable[[float], None]) -> None:
    """Users whose rescoring failed: pending again, with a drain scheduled for them."""
    ids = list(user_ids)
    if ids:
        get_redis().sadd(_pending(), *ids)
        _schedule_once(schedule)


def forget(user_ids: Iterable[int]) -> None:
    """Erased users: out of the pending set and every drain (shared.pipeline.erasure)."""
    ids = list(user_ids)
    if not ids:
        return
    redis = get_redis()
    redis.srem(_pending(), *ids)
    for raw in reply(redis.smembers(_drains())):
        drain = raw.decode()
        if redis.exists(drain):
            redis.srem(drain, *ids)
        else:  # emptied (Redis deletes an empty set) or expired
            redis.srem(_drains(), drain)


def pending_count() -> int:
    return int(reply(get_redis().scard(_pending())))


def _rescored() -> str:
    return key("rescore", "rescored")


def count_rescored(users: int) -> None:
    """Add to the running total of profiles computed by analytics (for throughput and metrics)."""
    if users:
        get_redis().incrby(_rescored(), users)


def rescored_total() -> int:
    return int(reply(get_redis().get(_rescored())) or 0)


# ----------------------------------------------------------------------------- durable pending (Postgres)

_RECORD_PENDING = text(
    # Sorted, so that two workers upserting overlapping users lock them in the same order; only
    # users that exist (an event of an erased user adds nothing, as in shared.pipeline.summaries).
    "INSERT INTO rescore_pending (user_id) SELECT DISTINCT u FROM unnest(CAST(:ids AS integer[])) AS u "
    "JOIN users ON users.id = u ORDER BY u "
    "ON CONFLICT (user_id) DO UPDATE SET change = nextval('rescore_change_seq'), changed_at = now()"
)
_CHANGES_SEEN = text("SELECT user_id, change FROM rescore_pending WHERE user_id = ANY(CAST(:ids AS integer[]))")
_CLEAR_SEEN = text(
    # Rows locked in user order first (as the workers' upserts take them), so a rescoring and an
    # ingestion touching the same users wait for each other instead of deadlocking. A row whose
    # change number moved meanwhile no longer matches once locked, and stays.
    "DELETE FROM rescore_pending WHERE user_id IN ("
    " SELECT p.user_id FROM rescore_pending p"
    " JOIN unnest(CAST(:ids AS integer[]), CAST(:changes AS bigint[])) AS s(user_id, change)"
    " ON p.user_id = s.user_id AND p.change = s.change ORDER BY p.user_id FOR UPDATE OF p)"
)
_STALE = text(
    "SELECT user_id FROM rescore_pending WHERE changed_at < now() - make_interval(secs => :seconds) "
    "ORDER BY changed_at LIMIT :limit"
)


def record_pending(session: Session, user_ids: Iterable[int]) -> None:
    """In the transaction that changed these users' data."""
    ids = coalesce(user_ids)
    if ids:
        session.execute(_RECORD_PENDING, {"ids": ids})


def changes_seen(session: Session, user_ids: list[int]) -> dict[int, int]:
    """Read before computing: the change numbers this rescoring will account for."""
    return {row.user_id: row.change for row in session.execute(_CHANGES_SEEN, {"ids": list(user_ids)})}


def clear_seen(session: Session, seen: dict[int, int]) -> None:
    """After storing the profiles, in the same transaction as their Postgres writes."""
    if seen:
        session.execute(_CLEAR_SEEN, {"ids": list(seen), "changes": list(seen.values())})


def sweep(session: Session, schedule: Callable[[float], None], older_than_seconds: float = 120,
          limit: int = 100_000) -> int:
    """Users pending in Postgres for longer than `older_than_seconds` (twice the sweep interval:
    a drain that is merely busy with them is left alone): back into the Redis set, with a drain
    scheduled. Returns how many."""
    ids = list(session.scalars(_STALE, {"seconds": older_than_seconds, "limit": limit}))
    if ids:
        get_redis().sadd(_pending(), *ids)
        _schedule_once(schedule)
    return len(ids)
