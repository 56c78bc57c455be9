"""Coalesced rescoring (shared.pipeline.rescore) against the real Redis.

The keys live under a prefix of this test's own, so the session's analytics worker (which drains
the run's real pending set) cannot take these users while a test looks at them.
"""
import uuid

import pytest

from shared.contracts.settings import get_settings
from shared.infra.cache import get_redis, key
from shared.pipeline import rescore


@pytest.fixture()
def own_prefix(services, monkeypatch):
    settings = get_settings()
    monkeypatch.setattr(settings, "cache_prefix", f"{settings.cache_prefix}rescore-{uuid.uuid4().hex[:6]}:")
    yield
    redis = get_redis()
    redis.delete(key("rescore", "pending"), key("rescore", "scheduled"))
    for drain in redis.scan_iter(match=key("rescore", "draining", "*")):
        redis.delete(drain)


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

    drain, count = rescore.start_drain()
    assert count == 4 and pending() == set()
    assert rescore.take(drain, 10) == [1, 2, 3, 4]
    # Starting a drain re-opens scheduling: the next change gets a drain of its own.
    assert rescore.mark_changed([5], schedules) is True
    assert len(schedules) == 2
    assert rescore.start_drain()[1] == 1
    assert rescore.start_drain() == (None, 0)  # nothing pending


def test_a_drain_takes_the_users_pending_when_it_starts_in_chunk_tasks(own_prefix, monkeypatch):
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
    rescore.mark_changed([1, 2, 3, 4, 5], lambda delay: None)

    assert tasks.compute_profiles_task.run() == {"profiles": 2}
    # One chunk here, one task for each further chunk of the users pending at the start, which
    # any analytics worker may run; the users changed meanwhile wait for their own drain.
    assert [name for name, _ in sent] == [tasks.COMPUTE_PROFILES] * 2
    drain = sent[0][1]["kwargs"]["drain"]
    assert all(options == {"kwargs": {"drain": drain}} for _, options in sent)
    for _, options in sent:
        tasks.compute_profiles_task.run(**options["kwargs"])
    assert [len(batch) for batch in drained] == [2, 2, 1]
    assert sorted(u for batch in drained for u in batch) == [1, 2, 3, 4, 5]
    assert pending() == {101, 102}


def test_a_failed_chunk_puts_its_users_back(own_prefix, monkeypatch):
    from services.analytics import tasks

    def failing(batch: list[int]) -> int:
        raise RuntimeError("MongoDB went away")

    monkeypatch.setattr(tasks, "rescore_users", failing)
    sent = []
    monkeypatch.setattr(tasks.app, "send_task", lambda name, **options: sent.append((name, options)))
    rescore.mark_changed([7, 8], lambda delay: None)
    with pytest.raises(RuntimeError):
        tasks.compute_profiles_task.run()
    assert pending() == {7, 8}
    # ... with a drain scheduled for them.
    assert sent == [(tasks.COMPUTE_PROFILES, {"countdown": get_settings().rescore_delay_seconds})]
