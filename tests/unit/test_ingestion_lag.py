"""The ingestion lag histogram's bucketing (shared.infra.ingestion_lag)."""
from datetime import UTC, datetime, timedelta

from shared.infra.ingestion_lag import BOUNDS, bucket_counts, lags


def test_a_lag_equal_to_a_bound_is_in_that_bounds_bucket():
    counts = bucket_counts([0.005, 0.0051, 60.0, 60.001, 1.0])
    assert len(counts) == len(BOUNDS) + 1
    assert counts[0] == 1  # 0.005: le="0.005"
    assert counts[BOUNDS.index(0.01)] == 1  # 0.0051
    assert counts[BOUNDS.index(1.0)] == 1
    assert counts[BOUNDS.index(60.0)] == 1
    assert counts[-1] == 1  # +Inf
    assert sum(counts) == 5


def test_negative_and_zero_lags_count_in_the_first_bucket():
    assert bucket_counts([-2.0, 0.0]) == [2] + [0] * len(BOUNDS)


def test_no_lags_no_counts():
    assert bucket_counts([]) == [0] * (len(BOUNDS) + 1)


def test_lags_are_from_received_at_to_stored_naive_instants_being_utc():
    stored = datetime(2026, 1, 1, 12, tzinfo=UTC)
    docs = [{"received_at": stored - timedelta(seconds=1.5)},
            {"received_at": (stored - timedelta(seconds=3)).replace(tzinfo=None)}]
    assert lags(docs, stored) == [1.5, 3.0]
