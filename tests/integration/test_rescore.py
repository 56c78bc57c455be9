"""Coalesced rescoring (shared.rescore) against the real Redis.

The keys live under a prefix of this test's own, so the session's analytics worker (which drains
the run's real pending set) cannot take these users while a test looks at them.
"""
import uuid

import pytest

from shared import rescore
from shared.cache import get_redis, key
from shared.settings import get_settings


@pytest.fixture()
def own_prefix(services, monkeypatch):
    settings = get_settings()
    monkeypatch.setattr(settings, "cache_prefix", f"{settings.cache_prefix}rescore-{uuid.uuid4().hex[:6]}:")
    yield
    redis = get_redis()
    redis.delete(key("rescore", "pending"), key("rescore", "scheduled"))


class Schedules(list):
    def __call__(self, delay: float) -> None:
        self.append(delay)


def pending() -> set[int]:
    return {int(u) for u in get_redis().smembers(key("rescore", "pending"))}


def test_one_drain_is_scheduled_per_window(own_prefix):
    schedules = Schedules()
    assert rescore.mark_changed([1, 2, 3], schedules) is True
    assert rescore.mark_changed([3, 4], schedules) is False  # already scheduled: only added
    assert schedules == [get_settings().rescore_delay_seconds]
    assert pending() == {1, 2, 3, 4}

    taken = rescore.take(10)
    assert taken == [1, 2, 3, 4] and pending() == set()
    # Taking re-opens scheduling: the next change gets a drain of its own.
    assert rescore.mark_changed([5], schedules) is True
    assert len(schedules) == 2


def test_a_drain_takes_as_many_users_as_were_pending_when_it_starts(own_prefix, monkeypatch):
    from services.analytics import tasks

    drained: list[list[int]] = []

    def rescore_and_receive_more(batch: list[int]) -> int:
        drained.append(batch)
        if len(drained) == 1:  # events for other users are stored while this drain runs
            rescore.mark_changed([101, 102], lambda delay: None)
        return len(batch)

    monkeypatch.setattr(tasks, "RESCORE_CHUNK", 2)
    monkeypatch.setattr(tasks, "rescore_users", rescore_and_receive_more)
    sent = []
    monkeypatch.setattr(tasks.app, "send_task", lambda name, **options: sent.append((name, options)))
    rescore.mark_changed([1, 2, 3], lambda delay: None)

    assert tasks.compute_profiles_task.run() == {"profiles": 3}
    # As many users as were pending at the start (SPOP picks which), each exactly once; the rest
    # wait for the next drain, and the drain makes sure one is scheduled.
    assert [len(batch) for batch in drained] == [2, 1]
    taken = [u for batch in drained for u in batch]
    assert len(set(taken)) == 3 and set(taken).isdisjoint(pending())
    assert set(taken) | pending() == {1, 2, 3, 101, 102}
    assert sent == [(tasks.COMPUTE_PROFILES, {"countdown": get_settings().rescore_delay_seconds})]


def test_a_failed_drain_puts_its_users_back(own_prefix, monkeypatch):
    from services.analytics import tasks

    def failing(batch: list[int]) -> int:
        raise RuntimeError("MongoDB went away")

    monkeypatch.setattr(tasks, "rescore_users", failing)
    rescore.mark_changed([7, 8], lambda delay: None)
    with pytest.raises(RuntimeError):
        tasks.compute_profiles_task.run()
    assert pending() == {7, 8}
