"""Sessions in the profile: exact whatever order the events arrive in, and fresh after new events."""
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.analytics.sessions import NO_SESSIONS, Sessions, load, window_events
from tests.fixtures import wait_for
from tests.helpers import signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


def page_view(user_id: int, when: datetime, event_id: str | None = None) -> dict:
    return {"event_id": event_id or uuid.uuid4().hex, "user_id": user_id, "event_type": "page_view",
            "timestamp": when.isoformat(), "metadata": {"page": "/home"}}


def sessions(client, user_id: int) -> dict:
    response = client.get(f"/api/users/{user_id}/profile")
    assert response.status_code == 200
    return response.get_json()


def test_sessions_are_the_same_whatever_order_the_events_arrive_in(client, mongo):
    start = (datetime.now(UTC) - timedelta(days=5)).replace(second=0, microsecond=0)
    minute = timedelta(minutes=1)
    # A: 0, 10, 25 min (25 min long); B: exactly 30 min after A's last (a gap at the idle time
    # ends a session): one event, 0 min; C: 3 h and 3 h 5 min (5 min). Outside the window: 40 days
    # ago. The signup's `user_created` (now) is a session of its own: 4 sessions, (25+0+5+0)/4 min.
    instants = [start, start + 10 * minute, start + 25 * minute, start + 55 * minute,
                start + 180 * minute, start + 185 * minute, start - timedelta(days=40)]
    in_order, shuffled = (client.post("/api/users/signup", json=signup_body()).get_json()["id"] for _ in range(2))

    assert client.post("/api/events/batch", json={"events": [page_view(in_order, t) for t in instants]}
                       ).status_code == 202
    late_first = [page_view(shuffled, t) for t in instants]
    random.Random(23).shuffle(late_first)
    for event in reversed(late_first):  # one request each, so each is its own batch and message
        assert client.post("/api/events", json=event).status_code == 202
    # The same event again: stored once, so it adds no session.
    assert client.post("/api/events", json=late_first[0]).status_code == 202
    for user_id in (in_order, shuffled):
        wait_for(lambda u=user_id: mongo.events.count_documents({"user_id": u}) == 8, what=f"user {user_id}'s events")

    expected = {"last_30_days": 4, "average_minutes_30d": 7.5}
    for user_id in (in_order, shuffled):
        profile = wait_for(lambda u=user_id: (p := sessions(client, u))["sessions"] == expected and p,
                           what=f"user {user_id}'s sessions")
        # The session figures describe the events `events_last_30_days` counts.
        assert profile["totals"]["events"] == 8 and profile["totals"]["events_last_30_days"] == 7
    assert client.get(f"/api/users/{in_order}/profile").headers["X-Cache"] == "HIT"

    # An event between A and B (15 min from each) joins them: A+B lasts 55 min. Sent to the
    # cached profile's person, so the cache must give way (store_batch bumps its version).
    for user_id in (in_order, shuffled):
        assert client.post("/api/events", json=page_view(user_id, start + 40 * minute)).status_code == 202
    joined = {"last_30_days": 3, "average_minutes_30d": 20.0}  # (55 + 5 + 0) / 3
    for user_id in (in_order, shuffled):
        wait_for(lambda u=user_id: sessions(client, u)["sessions"] == joined, what=f"user {user_id}'s sessions joined")


def test_a_profile_without_events_in_the_window_has_only_the_signups_session(client, mongo):
    user_id = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id}) == 1, what="the user_created event")
    # user_created is the person's first step on the site: a session like any other (0 min long).
    wait_for(lambda: sessions(client, user_id)["sessions"] == {"last_30_days": 1, "average_minutes_30d": 0.0},
             what="the signup's session")


def test_a_profiles_sessions_read_only_that_persons_events_of_the_window(mongo):
    """The cost: the person's events of the window, through ix_user_time; not their older events,
    not anyone else's."""
    now = datetime.now(UTC)
    person, others = 2_000_000_001, range(2_000_000_100, 2_000_000_120)
    docs = [{"event_id": f"w{i}", "user_id": person, "event_type": "page_view", "metadata": {},
             "timestamp": now - timedelta(hours=i)} for i in range(12)]
    docs += [{"event_id": f"old{i}", "user_id": person, "event_type": "page_view", "metadata": {},
              "timestamp": now - timedelta(days=40 + i)} for i in range(50)]
    docs += [{"event_id": f"o{i}", "user_id": other, "event_type": "page_view", "metadata": {},
              "timestamp": now - timedelta(hours=i)} for other in others for i in range(20)]
    mongo.events.insert_many(docs)
    try:
        stats = window_events(mongo, [person], now).explain()["executionStats"]
        assert stats["nReturned"] == 12
        assert stats["totalDocsExamined"] == 12
        # 12 one-hour gaps of 30 minutes or more: 12 sessions of one event.
        assert load(mongo, [person, 2_000_000_002], now, 30.0) == {
            person: Sessions(12, 0.0), 2_000_000_002: NO_SESSIONS}
    finally:
        mongo.events.delete_many({"user_id": {"$in": [person, *others]}})


def test_sessions_are_read_before_any_worker_has_made_the_index(mongo):
    """The API may answer before a worker has first started (and made ix_user_time): the read
    goes unhinted rather than failing the profile."""
    scratch = mongo.client[f"{mongo.name}_unindexed"]
    now = datetime.now(UTC)
    scratch.events.insert_many([{"event_id": f"e{i}", "user_id": 5, "timestamp": now - timedelta(minutes=10 * i)}
                                for i in range(3)])
    try:
        assert "ix_user_time" not in scratch.events.index_information()
        assert load(scratch, [5], now, 30.0) == {5: Sessions(1, 20.0)}
    finally:
        mongo.client.drop_database(scratch.name)
