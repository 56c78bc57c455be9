"""Sessions (shared.analytics.sessions): runs of one person's events with gaps shorter than the idle time."""
from datetime import UTC, datetime

import numpy as np
import pytest

from shared.analytics.sessions import NO_SESSIONS, Sessions, sessions_of, window_start

IDLE = 30 * 60.0


def of(pairs, idle=IDLE):
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    seconds = np.array([s for _, s in pairs], dtype=np.float64)
    return sessions_of(users, seconds, idle)


def test_no_events_no_sessions():
    assert of([]) == {}
    assert NO_SESSIONS.as_profile() == {"last_30_days": 0, "average_minutes_30d": None}


def test_one_event_is_one_session_of_zero_minutes():
    assert of([(7, 1000.0)]) == {7: Sessions(1, 0.0)}


def test_a_gap_exactly_at_the_idle_time_ends_the_session_and_one_just_below_does_not():
    assert of([(1, 0.0), (1, IDLE)]) == {1: Sessions(2, 0.0)}
    assert of([(1, 0.0), (1, IDLE - 0.001)]) == {1: Sessions(1, (IDLE - 0.001) / 60)}


def test_length_is_last_minus_first_and_the_average_is_over_sessions():
    # Session 1: 0, 10 min, 25 min (25 min long); session 2 starts 30 min after 25 min: one event;
    # session 3: 2 h and 2 h 5 min (5 min long).
    minute = 60.0
    events = [(1, 0.0), (1, 10 * minute), (1, 25 * minute), (1, 55 * minute), (1, 120 * minute), (1, 125 * minute)]
    assert of(events) == {1: Sessions(3, (25 + 0 + 5) / 3)}


def test_any_arrival_order_gives_the_same_sessions():
    rng = np.random.default_rng(23)
    users = rng.integers(1, 6, size=400)
    seconds = np.sort(rng.uniform(0, 30 * 86400, size=400))
    expected = sessions_of(users, seconds, IDLE)
    for _ in range(5):
        order = rng.permutation(400)
        assert sessions_of(users[order], seconds[order], IDLE) == expected
    # Against a plain loop over each person's sorted events.
    for user in np.unique(users):
        mine = sorted(seconds[users == user])
        lengths, start = [], mine[0]
        for before, after in zip(mine, mine[1:], strict=False):
            if after - before >= IDLE:
                lengths.append(before - start)
                start = after
        lengths.append(mine[-1] - start)
        assert expected[int(user)].count == len(lengths)
        assert expected[int(user)].average_minutes == pytest.approx(sum(lengths) / len(lengths) / 60)


def test_people_are_apart_even_when_their_events_interleave():
    assert of([(1, 0.0), (2, 60.0), (1, 120.0), (2, 180.0)]) == {1: Sessions(1, 2.0), 2: Sessions(1, 2.0)}


def test_same_instant_twice_is_one_session():
    assert of([(3, 5.0), (3, 5.0)]) == {3: Sessions(1, 0.0)}


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        sessions_of(np.array([1]), np.array([1.0, 2.0]), IDLE)
    with pytest.raises(ValueError):
        sessions_of(np.array([1]), np.array([1.0]), 0)


def test_the_window_starts_at_the_utc_day_30_days_ago():
    now = datetime(2026, 3, 31, 23, 59, tzinfo=UTC)
    assert window_start(now) == datetime(2026, 3, 1, tzinfo=UTC)


def test_profile_form_rounds_the_average():
    assert Sessions(3, 10 / 3).as_profile() == {"last_30_days": 3, "average_minutes_30d": 3.33}
