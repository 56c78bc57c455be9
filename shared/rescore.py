"""Coalesced rescoring: many event batches for overlapping users become one analytics run.

The worker adds the users whose events it stored (and every new signup) to a Redis set and
schedules one drain task, unless one is already scheduled. A drain takes exactly the users who
were pending when it started: it renames the set to one of its own, so users changed meanwhile
wait for the next drain, scheduled `rescore_delay_seconds` after them. The drain's users are
rescored in chunks, one task per chunk, so every analytics worker process takes a share. Under a
burst of ingestion this turns "one rescoring of ~N users per stored chunk" into one per delay
(draining until the set was empty rescored the same users after every chunk, and those reads
and writes competed with the burst for MongoDB: the pipeline ran up to 2x slower).

Correctness does not depend on it: the profile cache is invalidated synchronously by the writer
(see shared.profile_cache), so API reads are fresh even before the drain runs. Should a drain's worker
die between taking users and storing their profiles, their MongoDB profile documents wait for
their next event or the next refit; a chunk that fails puts its users back before retrying.
"""
import uuid
from collections.abc import Callable, Iterable

from redis.exceptions import ResponseError

from shared.cache import get_redis, key
from shared.settings import get_settings

SCHEDULED_TTL_SECONDS = 120  # a lost drain message must not block rescoring for long
DRAIN_TTL_SECONDS = 24 * 3600  # a drain whose workers all died must not keep its set forever


def _pending() -> str:
    return key("rescore", "pending")


def _scheduled() -> str:
    return key("rescore", "scheduled")


def mark_changed(user_ids: Iterable[int], schedule: Callable[[float], None]) -> bool:
    """Record changed users; call `schedule(delay)` when no drain is scheduled yet."""
    ids = list(user_ids)
    if not ids:
        return False
    get_redis().sadd(_pending(), *ids)
    return _schedule_once(schedule)


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
    return drain, int(redis.scard(drain))


def take(drain: str, batch: int) -> list[int]:
    """Take up to `batch` users of a drain."""
    return sorted(int(u) for u in (get_redis().spop(drain, batch) or []))


def put_back(user_ids: Iterable[int], schedule: Callable[[float], None]) -> None:
    """Users whose rescoring failed: pending again, with a drain scheduled for them."""
    ids = list(user_ids)
    if ids:
        get_redis().sadd(_pending(), *ids)
        _schedule_once(schedule)


def pending_count() -> int:
    return int(get_redis().scard(_pending()))


def _rescored() -> str:
    return key("rescore", "rescored")


def count_rescored(users: int) -> None:
    """Add to the running total of profiles computed by analytics (for throughput and metrics)."""
    if users:
        get_redis().incrby(_rescored(), users)


def rescored_total() -> int:
    return int(get_redis().get(_rescored()) or 0)
