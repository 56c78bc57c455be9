"""Coalesced rescoring: many event batches for overlapping users become one analytics run.

The worker adds the users whose events it stored to a Redis set and schedules one drain task,
unless one is already scheduled; the analytics worker drains the set in chunks. A drain takes as
many users as were pending when it started (SPOP picks which); the rest wait for the next drain,
scheduled `rescore_delay_seconds` after them. Under a burst of ingestion this turns "one
rescoring of ~N users per stored chunk" into one per delay (draining until the set was empty
rescored the same users after every chunk, and those reads and writes competed with the burst
for MongoDB: the pipeline ran up to 2x slower).

Correctness does not depend on it: the profile cache is invalidated synchronously by the writer
(see shared.profile_cache), so API reads are fresh even before the drain runs. Should a drain die
between taking users and storing their profiles, their MongoDB profile documents wait for their
next event or the next refit; a failed drain puts its users back before retrying.
"""
from collections.abc import Callable, Iterable

from shared.cache import get_redis, key
from shared.settings import get_settings

SCHEDULED_TTL_SECONDS = 120  # a lost drain message must not block rescoring for long


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


def schedule_if_pending(schedule: Callable[[float], None]) -> bool:
    """After a drain: users left pending (added while it ran) get a drain of their own, even if
    the worker that added them found one still scheduled."""
    return pending_count() > 0 and _schedule_once(schedule)


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


def take(batch: int) -> list[int]:
    """Take up to `batch` pending users. The first take re-opens scheduling, so changes that
    arrive while this drain runs get a drain of their own."""
    redis = get_redis()
    redis.delete(_scheduled())
    return sorted(int(u) for u in (redis.spop(_pending(), batch) or []))


def put_back(user_ids: Iterable[int]) -> None:
    ids = list(user_ids)
    if ids:
        get_redis().sadd(_pending(), *ids)


def pending_count() -> int:
    return int(get_redis().scard(_pending()))
