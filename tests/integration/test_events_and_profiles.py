"""Events through the real worker into MongoDB, and cached profiles that are never stale."""
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.pipeline import profile_cache
from tests.fixtures import keyed_client, wait_for
from tests.helpers import purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


@pytest.fixture()
def user_id(client):
    return client.post("/api/users/signup", json=signup_body()).get_json()["id"]


def stored(mongo, event_ids):
    return mongo.events.count_documents({"event_id": {"$in": list(event_ids)}})


def test_batch_is_stored_once_even_when_resent(client, mongo, user_id):
    events = [purchase(user_id, 10.0 + i, "books") for i in range(20)]
    first = client.post("/api/events/batch", json={"events": events})
    assert first.status_code == 202
    ids = first.get_json()["event_ids"]
    assert ids == [e["event_id"] for e in events]
    wait_for(lambda: stored(mongo, ids) == 20, what="20 events in MongoDB")

    again = client.post("/api/events/batch", json={"events": events})
    assert again.status_code == 202
    single = client.post("/api/events", json=events[0])
    assert single.status_code == 202 and single.get_json() == {"event_id": events[0]["event_id"]}
    # A marker sent after the duplicates is stored after them (one queue, FIFO per consumer is not
    # guaranteed with 2 processes, so wait for the marker and then for the duplicates' users to be rescored).
    marker = purchase(user_id, 1.0, "books")
    client.post("/api/events", json=marker)
    wait_for(lambda: stored(mongo, [marker["event_id"]]) == 1, what="marker event")
    assert stored(mongo, ids) == 20
    assert mongo.events.count_documents({"user_id": user_id, "event_type": "user_purchase"}) == 21


def test_generated_ids_and_utc_timestamps(client, mongo, user_id):
    response = client.post(
        "/api/events",
        json={"user_id": user_id, "event_type": "page_view", "timestamp": "2024-01-15T12:30:00+02:00",
              "metadata": {"page": "/home"}},
    )
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    doc = wait_for(lambda: mongo.events.find_one({"event_id": event_id}), what="page_view stored")
    assert doc["timestamp"].isoformat() == "2024-01-15T10:30:00+00:00"
    assert doc["metadata"] == {"page": "/home"}


@pytest.mark.parametrize(
    "event, field",
    [
        ({"event_type": "user_purchase", "metadata": {"product_id": "P", "price": -1, "category": "x"}},
         "metadata.price"),
        ({"event_type": "user_purchase", "metadata": {"product_id": "P", "price": 3}}, "metadata.category"),
        ({"event_type": "user_purchase", "metadata": {"product_id": "P", "price": "cheap", "category": "x"}},
         "metadata.price"),
        ({"event_type": "Mystery"}, "event_type"),  # not a custom type's name either
    ],
)
def test_bad_events_are_422_and_nothing_is_stored(client, mongo, user_id, event, field):
    good = purchase(user_id, 5.0, "toys")
    bad = {"event_id": uuid.uuid4().hex, "user_id": user_id, **event}
    response = client.post("/api/events/batch", json={"events": [good, bad]})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert [e["field"] for e in response.get_json()["errors"]] == [f"events[1].{field}"]
    single = client.post("/api/events", json=bad)
    assert single.status_code == 422 and single.get_json()["errors"][0]["field"] == field
    marker = purchase(user_id, 1.0, "toys")
    client.post("/api/events", json=marker)
    wait_for(lambda: stored(mongo, [marker["event_id"]]) == 1, what="marker event")
    assert stored(mongo, [good["event_id"], bad["event_id"]]) == 0


def test_unknown_user_and_oversized_batch_are_refused(client, mongo, user_id):
    ghost = purchase(2_000_000_000, 5.0, "toys")
    response = client.post("/api/events/batch", json={"events": [purchase(user_id, 1.0, "toys"), ghost]})
    assert response.status_code == 422
    assert response.get_json()["errors"] == [{"field": "events[1].user_id", "message": "no user with id 2000000000"}]
    single = client.post("/api/events", json=ghost)
    assert single.status_code == 422 and single.get_json()["errors"][0]["field"] == "user_id"

    too_many = [purchase(user_id, 1.0, "toys") for _ in range(1001)]
    oversized = client.post("/api/events/batch", json={"events": too_many})
    assert oversized.status_code == 413
    assert "at most 1000" in oversized.get_json()["detail"]
    empty = client.post("/api/events/batch", json={"events": []})
    assert empty.status_code == 422 and empty.get_json()["errors"][0]["field"] == "events"
    marker = purchase(user_id, 1.0, "toys")
    client.post("/api/events", json=marker)
    wait_for(lambda: stored(mongo, [marker["event_id"]]) == 1, what="marker event")
    assert stored(mongo, [ghost["event_id"]] + [e["event_id"] for e in too_many]) == 0


def test_profile_is_cached_and_reflects_events_stored_after_caching(client, mongo, user_id):
    wait_for(lambda: mongo.profiles.find_one({"user_id": user_id, "segment": {"$ne": None}}), what="first profile")
    first = client.get(f"/api/users/{user_id}/profile")
    assert first.status_code == 200
    assert first.get_json()["totals"]["total_spent"] == 0
    assert first.get_json()["segment"] == "AT_RISK"  # the guide: no purchase counts as buying today
    second = client.get(f"/api/users/{user_id}/profile")
    assert second.headers["X-Cache"] == "HIT"
    assert second.get_json() == first.get_json()

    event = purchase(user_id, 1500.0, "electronics")
    assert client.post("/api/events", json=event).status_code == 202
    # Stored: the worker's transaction that counts it committed (the purchase days, which
    # /purchases reads, and the user's new cache version commit together). Polled without reading
    # the profile, so nothing is computed in between.
    wait_for(lambda: client.get(f"/api/users/{user_id}/purchases").get_json()["items"], what="purchase stored")

    # As soon as the event is stored, no read may show the old totals.
    after = client.get(f"/api/users/{user_id}/profile").get_json()
    assert after["totals"]["total_spent"] == 1500.0
    assert after["totals"]["purchases"] == 1
    assert after["segment"] == "VIP"
    assert after["recommendations"] == [] or "electronics" not in after["recommendations"]


def test_concurrent_misses_compute_once(app, client, user_id, mongo):
    wait_for(lambda: mongo.profiles.find_one({"user_id": user_id, "segment": {"$ne": None}}), what="first profile")
    profile_cache.invalidate([user_id])
    before = profile_cache.stats()["computed"]

    def read(_):
        response = keyed_client(app).get(f"/api/users/{user_id}/profile")
        return response.status_code, response.get_json()["user_id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(read, range(8)))
    assert results == [(200, user_id)] * 8
    assert profile_cache.stats()["computed"] - before == 1, (profile_cache.stats(), before)


def test_unknown_profile_is_404(client):
    response = client.get("/api/users/2000000000/profile")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"


def test_engagement_is_written_back_as_profile_score(client, mongo, user_id):
    event = purchase(user_id, 250.0, "garden")
    client.post("/api/events", json=event)
    def score_matches():
        profile = mongo.profiles.find_one({"user_id": user_id, "totals.purchases": 1})
        user = client.get(f"/api/users/{user_id}").get_json()
        return profile and user["profile_score"] == profile["engagement"] and user["profile_score"] > 0
    wait_for(score_matches, what="profile_score == engagement")


def activity_rows(user_id: int) -> dict:
    from sqlalchemy import text

    from shared.infra.db import session_scope

    with session_scope() as session:
        rows = session.execute(
            text("SELECT day, events, last_event_at FROM activity_days WHERE user_id = :u ORDER BY day"),
            {"u": user_id},
        )
        return {row.day.isoformat(): (row.events, row.last_event_at) for row in rows}


def test_daily_activity_counters_match_a_recount_from_the_events(client, mongo, user_id):
    from shared.infra.db import session_scope
    from shared.pipeline import summaries

    events = [
        # 01:30 in Kyiv is still the previous day in UTC: days are UTC days.
        purchase(user_id, 5.0, "books", timestamp="2024-01-15T01:30:00+02:00"),
        purchase(user_id, 6.0, "books", timestamp="2024-01-15T09:00:00+00:00"),
        purchase(user_id, 7.0, "books", timestamp="2024-01-15T23:59:00+00:00"),
        purchase(user_id, 8.0, "toys", timestamp="2024-03-01T10:00:00+00:00"),
        purchase(user_id, 9.0, "toys", timestamp="2024-03-01T11:00:00+00:00"),
    ]
    assert client.post("/api/events/batch", json={"events": events}).status_code == 202
    # Plus the user_created event the signup stored.
    counted = wait_for(lambda: (rows := activity_rows(user_id)) and sum(n for n, _ in rows.values()) == 6 and rows,
                       what="6 events counted")
    assert {day: n for day, (n, _) in counted.items() if day.startswith("2024")} == {
        "2024-01-14": 1, "2024-01-15": 2, "2024-03-01": 2}
    assert counted["2024-01-15"][1].isoformat() == "2024-01-15T23:59:00+00:00"

    # Re-sent with a marker in the same batch (one message, one insert): once the marker is
    # counted, so is whatever the duplicates added, which must be nothing.
    marker = purchase(user_id, 1.0, "books", timestamp="2024-05-05T05:05:05.123456+00:00")
    assert client.post("/api/events/batch", json={"events": events + [marker]}).status_code == 202
    after = wait_for(lambda: (rows := activity_rows(user_id)).get("2024-05-05") and rows, what="marker counted")
    assert after == {**counted, "2024-05-05": (1, after["2024-05-05"][1])}

    with session_scope() as session:
        assert [d.rows for d in summaries.check(mongo, session, [user_id])] == [0, 0, 0, 0, 0]
        summaries.rebuild(mongo, session, [user_id])
    assert activity_rows(user_id) == after


def test_cache_hits_are_served_before_flask_with_the_views_response(services, pipeline, mongo, user_id):
    from services.api.app import create_app

    app = create_app()  # its own app, so a hook can count what reaches Flask
    reached_flask = []
    app.before_request(lambda: reached_flask.append(1) and None)
    client = keyed_client(app)
    wait_for(lambda: mongo.profiles.find_one({"user_id": user_id, "segment": {"$ne": None}}), what="first profile")
    profile_cache.invalidate([user_id])
    hits_before = profile_cache.stats()["hits"]

    miss = client.get(f"/api/users/{user_id}/profile")
    assert miss.headers["X-Cache"] == "MISS" and len(reached_flask) == 1
    hit = client.get(f"/api/users/{user_id}/profile")
    assert hit.headers["X-Cache"] == "HIT" and len(reached_flask) == 1  # answered before Flask
    assert hit.data == miss.data
    assert hit.headers["Content-Type"] == miss.headers["Content-Type"] == "application/json"
    assert int(hit.headers["Content-Length"]) == len(hit.data)
    assert profile_cache.stats()["hits"] - hits_before == 1

    # What the fast path does not answer goes to the view: a query string, HEAD, an unknown user.
    assert client.get(f"/api/users/{user_id}/profile?x=1").headers["X-Cache"] == "HIT"
    assert client.head(f"/api/users/{user_id}/profile").status_code == 200
    missing = client.get("/api/users/999999999/profile")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    assert len(reached_flask) == 4


def test_a_profile_cached_in_an_older_shape_is_not_served_and_erasure_removes_every_shape(client, mongo, user_id):
    # A deploy that adds a field to the profile (issue 23 added `sessions`) finds profiles cached by
    # the code before it, under the user's current version: they must not be served without it.
    import redis as redis_lib

    from shared.contracts.settings import get_settings
    from shared.infra.cache import key

    wait_for(lambda: mongo.profiles.find_one({"user_id": user_id, "segment": {"$ne": None}}), what="first profile")
    assert client.get(f"/api/users/{user_id}/profile").status_code == 200
    version = profile_cache.current_version(user_id)
    redis = redis_lib.Redis.from_url(get_settings().redis_url)
    legacy = key("profile", user_id)  # where the code before the shape version cached it
    redis.set(legacy, f"{version}:" + profile_cache.dumps({"user_id": user_id, "cached_by": "an older deploy"}))
    for _ in range(2):
        answer = client.get(f"/api/users/{user_id}/profile")
        assert answer.status_code == 200 and "cached_by" not in answer.get_json()
        assert "sessions" in answer.get_json()
    assert redis.exists(profile_cache.profile_key(user_id)) and profile_cache.profile_key(user_id) != legacy

    assert client.delete(f"/api/users/{user_id}").status_code == 202
    wait_for(lambda: not redis.exists(legacy, profile_cache.profile_key(user_id)),
             what="the erasure to delete the profile cached in every shape")
