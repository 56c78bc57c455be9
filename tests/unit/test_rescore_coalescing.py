"""shared.pipeline.rescore: how changed users are coalesced before they are queued (`coalesce`:
each once, in lock order) and how a drain is split into tasks (`chunk_tasks`: the task that
starts a drain rescores one chunk, and sends one task per further chunk)."""
from __future__ import annotations

import math
import random

import pytest

from shared.pipeline.rescore import chunk_tasks, coalesce


def test_coalesce_names_each_user_once_in_ascending_order():
    assert coalesce([5, 3, 5, 5, 1, 3]) == [1, 3, 5]
    # A batch of 1,000 events of 3 users is 3 users to rescore.
    assert coalesce([7, 2, 9] * 333 + [2]) == [2, 7, 9]


def test_coalesce_of_nothing_is_nothing():
    # `mark_changed` and `record_pending` then touch neither Redis nor Postgres.
    assert coalesce([]) == []
    assert coalesce(iter(())) == []


def test_coalesce_takes_any_iterable_and_ids_as_text():
    assert coalesce(u for u in (3, 1, 2, 1)) == [1, 2, 3]
    # Redis gives members back as bytes/text: "10" sorts after "9" only as a number.
    assert coalesce(["10", "9", 9, b"10"]) == [9, 10]


@pytest.mark.parametrize("seed", range(20))
def test_coalesce_keeps_every_user_and_orders_overlapping_batches_alike(seed):
    rng = random.Random(seed)
    users = [rng.randint(1, 50) for _ in range(rng.randint(1, 200))]
    got = coalesce(users)
    assert set(got) == set(users) and len(got) == len(set(users))
    # Two workers with overlapping users lock the shared ones in the same relative order.
    other = [rng.randint(1, 50) for _ in range(100)]
    shared = set(users) & set(other)
    assert [u for u in got if u in shared] == [u for u in coalesce(other) if u in shared]


@pytest.mark.parametrize("pending, chunk, further", [
    (0, 500, 0),       # an empty drain (start_drain returns nothing to drain before this is asked)
    (1, 500, 0),
    (499, 500, 0),
    (500, 500, 0),     # exactly one chunk: the starting task takes it all
    (501, 500, 1),     # one user more is one task more
    (1000, 500, 1),
    (1001, 500, 2),
    (1, 1, 0),
    (2, 1, 1),
    (10, 3, 3),
])
def test_chunk_tasks_at_each_boundary(pending, chunk, further):
    assert chunk_tasks(pending, chunk) == further


@pytest.mark.parametrize("chunk", [1, 2, 7, 500])
def test_a_drains_tasks_take_every_user_and_none_is_idle(chunk):
    for pending in range(1, 3 * chunk + 2):
        tasks = 1 + chunk_tasks(pending, chunk)
        # Together they can take every pending user (`take` pops up to a chunk each)...
        assert tasks * chunk >= pending, (pending, chunk)
        # ...and one task fewer could not: no task is sent to find the drain empty.
        assert (tasks - 1) * chunk < pending, (pending, chunk)
        assert tasks == math.ceil(pending / chunk)
