"""Anonymous visitors, identify and the merge, through the real API, relay and worker (issue 23):
a visitor's events are stored and deduplicated like a user's, identify makes them the user's
exactly once (a guest purchase becomes the first purchase), erasure takes them too."""
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from shared.infra.db import session_scope
from tests.fixtures import wait_for
from tests.helpers import purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


def anonymous() -> str:
    return f"anon-{uuid.uuid4().hex}"


def page_view(anonymous_id: str, **extra) -> dict:
    return {"event_id": extra.pop("event_id", uuid.uuid4().hex), "anonymous_id": anonymous_id,
            "event_type": "page_view", "metadata": {"page": "/pricing"}, **extra}


def guest_purchase(anonymous_id: str, price: float, category: str, **extra) -> dict:
    event = purchase(0, price, category, anonymous_id=anonymous_id, **extra)
    del event["user_id"]
    return event


def visitor(anonymous_id: str) -> tuple[int, int | None] | None:
    with session_scope() as session:
        row = session.execute(text("SELECT id, user_id FROM visitors WHERE anonymous_id = :a"),
                              {"a": anonymous_id}).first()
    return (row.id, row.user_id) if row else None


def signup(client, **overrides) -> int:
    response = client.post("/api/users/signup", json=signup_body(**overrides))
    assert response.status_code == 201, response.get_json()
    if "anonymous_id" in overrides:  # a fresh visitor or one of no one: linked
        assert response.get_json()["anonymous_id_linked"] is True, response.get_json()
    return int(response.get_json()["id"])


def summary(user_id: int):
    with session_scope() as session:
        return session.execute(text(
            "SELECT first_purchase_at, purchases, CAST(spent AS float8) AS spent FROM customer_summaries "
            "WHERE user_id = :u"), {"u": user_id}).first()


def send(client, events: list[dict], **body) -> dict:
    response = client.post("/api/events/batch", json={"events": events, **body})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_a_visitors_events_are_stored_under_its_negative_id_and_a_resent_batch_adds_nothing(client, mongo):
    anon = anonymous()
    events = [page_view(anon) for _ in range(3)]
    send(client, events)
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon}) == 3, what="the visitor's 3 events")
    found = visitor(anon)
    assert found is not None and found[1] is None
    assert {d["user_id"] for d in mongo.events.find({"anonymous_id": anon})} == {-found[0]}
    send(client, events)  # the same events again: a retry
    marker = page_view(anon)
    send(client, [marker])
    wait_for(lambda: mongo.events.count_documents({"event_id": marker["event_id"]}) == 1, what="marker")
    assert mongo.events.count_documents({"anonymous_id": anon}) == 4


def test_two_visitors_using_the_same_event_id_are_two_events(client, mongo):
    a, b, shared_id = anonymous(), anonymous(), uuid.uuid4().hex
    answer = send(client, [page_view(a, event_id=shared_id), page_view(b, event_id=shared_id)])
    assert answer["accepted"] == 2 and answer["duplicates"] == 0
    wait_for(lambda: mongo.events.count_documents({"event_id": shared_id}) == 2, what="both visitors' events")


def test_an_event_names_a_user_or_a_visitor(client):
    response = client.post("/api/events/batch", json={"events": [{"event_type": "page_view"}]})
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == ["events[0].user_id"]
    single = client.post("/api/events", json={"event_type": "login"})
    assert single.status_code == 422 and single.get_json()["errors"][0]["field"] == "user_id"
    too_long = client.post("/api/events", json={"event_type": "login", "anonymous_id": "x" * 201})
    assert too_long.status_code == 422 and too_long.get_json()["errors"][0]["field"] == "anonymous_id"
    # An unknown user is still refused, also beside an anonymous id.
    ghost = client.post("/api/events", json={"event_type": "login", "user_id": 2_000_000_000,
                                             "anonymous_id": anonymous()})
    assert ghost.status_code == 422 and ghost.get_json()["errors"][0]["field"] == "user_id"


def test_identify_repeated_is_200_unchanged_another_user_is_409_an_unknown_user_422(client):
    first, second, anon = signup(client), signup(client), anonymous()
    made = client.post("/api/identify", json={"anonymous_id": anon, "user_id": first})
    assert made.status_code == 200 and made.get_json() == {"anonymous_id": anon, "user_id": first, "linked": True}
    again = client.post("/api/identify", json={"anonymous_id": anon, "user_id": first})
    assert again.status_code == 200 and again.get_json()["linked"] is False
    stolen = client.post("/api/identify", json={"anonymous_id": anon, "user_id": second})
    assert stolen.status_code == 409 and stolen.get_json()["errors"][0]["field"] == "anonymous_id"
    assert visitor(anon)[1] == first
    ghost = client.post("/api/identify", json={"anonymous_id": anonymous(), "user_id": 2_000_000_000})
    assert ghost.status_code == 422 and ghost.get_json()["errors"][0]["field"] == "user_id"
    # Several devices for one user.
    assert client.post("/api/identify", json={"anonymous_id": anonymous(), "user_id": first}).status_code == 200
    # Signing up with another user's anonymous id (a shared computer's cookie) creates the account,
    # unlinked: the visitor stays its first user's.
    body = signup_body(anonymous_id=anon)
    taken = client.post("/api/users/signup", json=body)
    assert taken.status_code == 201 and taken.get_json()["anonymous_id_linked"] is False, taken.get_json()
    assert visitor(anon)[1] == first
    with session_scope() as session:
        assert session.scalar(text("SELECT count(*) FROM users WHERE username = :u"), {"u": body["username"]}) == 1
    # An event with both ids naming another user's visitor is refused where the API can see it.
    both = client.post("/api/events", json={**page_view(anon), "user_id": second})
    assert both.status_code == 422 and both.get_json()["errors"][0]["field"] == "anonymous_id"


def test_signup_with_the_anonymous_id_makes_the_visits_the_users(client, mongo):
    anon = anonymous()
    send(client, [page_view(anon) for _ in range(5)])
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon}) == 5, what="5 visits")
    user_id = signup(client, anonymous_id=anon)
    assert visitor(anon)[1] == user_id
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id, "anonymous_id": anon}) == 5
             and mongo.events.count_documents({"anonymous_id": anon, "user_id": {"$lt": 0}}) == 0,
             what="the visits merged into the user")
    profile = wait_for(lambda: (p := client.get(f"/api/users/{user_id}/profile").get_json())
                       and p["totals"]["events"] == 6 and p, what="the profile counting 5 visits + the signup")
    assert profile["totals"]["events"] == 6
    export = client.get(f"/api/users/{user_id}/export").get_json()
    assert export["anonymous_ids"] == [anon]
    # Later anonymous events count for the user.
    later = page_view(anon)
    send(client, [later])
    stored = wait_for(lambda: mongo.events.find_one({"event_id": later["event_id"]}), what="a later visit")
    assert stored["user_id"] == user_id and stored["anonymous_id"] == anon


def test_a_guest_purchase_identified_later_becomes_the_customers_first_purchase(client, mongo):
    user_id, anon = signup(client), anonymous()
    early = (datetime.now(UTC) - timedelta(days=10)).replace(microsecond=0)
    late = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    send(client, [purchase(user_id, 20.0, "books", timestamp=late.isoformat())])
    guest = guest_purchase(anon, 80.0, "garden", timestamp=early.isoformat())
    send(client, [guest])
    wait_for(lambda: summary(user_id) is not None and mongo.events.count_documents({"anonymous_id": anon}) == 1,
             what="the user's purchase counted and the guest's stored")
    assert summary(user_id).purchases == 1
    assert client.post("/api/identify", json={"anonymous_id": anon, "user_id": user_id}).status_code == 200
    row = wait_for(lambda: (s := summary(user_id)) and s.purchases == 2 and s, what="the guest purchase counted")
    assert row.first_purchase_at == early and row.spent == 100.0
    # The merge deletes a page's visitor documents once its copies have committed: just after them.
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon, "user_id": {"$lt": 0}}) == 0,
             what="the visitor's documents deleted")
    profile = client.get(f"/api/users/{user_id}/profile").get_json()
    assert profile["totals"]["purchases"] == 2 and profile["totals"]["total_spent"] == 100.0
    # The guest's event re-sent after the link is the user's, already stored: no second document.
    send(client, [guest])
    marker = page_view(anon)
    send(client, [marker])
    wait_for(lambda: mongo.events.count_documents({"event_id": marker["event_id"]}) == 1, what="marker")
    assert mongo.events.count_documents({"event_id": guest["event_id"]}) == 1
    assert summary(user_id).purchases == 2


def test_an_event_with_both_ids_links_the_visitor(client, mongo):
    user_id, anon = signup(client), anonymous()
    send(client, [page_view(anon) for _ in range(2)])
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon}) == 2, what="2 visits")
    both = {**page_view(anon), "user_id": user_id}
    send(client, [both])
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id, "anonymous_id": anon}) == 3,
             what="the visits merged and the event stored as the user's")
    assert visitor(anon)[1] == user_id
    # The merge deletes a page's visitor documents once its copies have committed: just after them.
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon, "user_id": {"$lt": 0}}) == 0,
             what="the visitor's documents deleted")


def _link_without_merge(anon: str, user_id: int) -> int:
    """The link as identify commits it, minus its outbox row: the merge is the test's to run. (It
    schedules the worker's real rescoring drain: a no-op would leave the shared "drain scheduled"
    flag set with no drain coming, and stall the rescoring of the tests after it until it expires.)"""
    with session_scope() as session:
        return int(session.scalar(text(
            "UPDATE visitors SET user_id = :u, linked_at = now() WHERE anonymous_id = :a RETURNING id"),
            {"u": user_id, "a": anon}))


def test_a_merge_killed_between_its_steps_and_redelivered_counts_each_event_once(client, mongo):
    from services.worker.merge import batch_id, copies, merge_visitor
    from services.worker.storage import store_batch

    user_id, anon = signup(client), anonymous()
    guests = [guest_purchase(anon, 10.0 * (i + 1), "books", event_id=f"g{i}") for i in range(5)]
    send(client, guests)
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon}) == 5, what="5 guest purchases")
    visitor_id = _link_without_merge(anon, user_id)

    from services.worker.tasks import _schedule_rescore as schedule  # a real drain (see _link_without_merge)

    # Attempt 1 of the first page (2 events) stored and applied its copies, then died after
    # deleting one of the page's two documents.
    page = list(mongo.events.find({"user_id": -visitor_id}).sort("event_id", 1).limit(2))
    store_batch(mongo, batch_id(visitor_id, page), copies(page, user_id), schedule, resolve_visitors=False,
                moved_from=-visitor_id)
    mongo.events.delete_one({"user_id": -visitor_id, "event_id": page[0]["event_id"]})
    # Redelivered, twice over.
    merge_visitor(mongo, visitor_id, user_id, schedule, page_size=2)
    merge_visitor(mongo, visitor_id, user_id, schedule, page_size=2)
    row = summary(user_id)
    assert row.purchases == 5 and row.spent == 150.0
    assert mongo.events.count_documents({"user_id": user_id, "anonymous_id": anon}) == 5
    assert mongo.events.count_documents({"user_id": -visitor_id}) == 0


def test_a_merge_copy_of_an_event_the_user_has_is_a_duplicate(client, mongo):
    from services.worker.merge import merge_visitor

    user_id, anon = signup(client), anonymous()
    send(client, [purchase(user_id, 30.0, "books", event_id="same-order")])
    send(client, [guest_purchase(anon, 30.0, "books", event_id="same-order")])
    wait_for(lambda: summary(user_id) is not None and mongo.events.count_documents({"anonymous_id": anon}) == 1,
             what="both stored")
    visitor_id = _link_without_merge(anon, user_id)
    from services.worker.tasks import _schedule_rescore

    merge_visitor(mongo, visitor_id, user_id, _schedule_rescore)
    assert summary(user_id).purchases == 1
    assert mongo.events.count_documents({"event_id": "same-order"}) == 1


def test_erasing_a_user_erases_its_visitors_events_merged_or_not(client, mongo):
    user_id, merged, pending = signup(client), anonymous(), anonymous()
    send(client, [page_view(merged), page_view(pending), page_view(pending)])
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": {"$in": [merged, pending]}}) == 3,
             what="the visits")
    assert client.post("/api/identify", json={"anonymous_id": merged, "user_id": user_id}).status_code == 200
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id, "anonymous_id": merged}) == 1,
             what="the first visitor merged")
    pending_id = _link_without_merge(pending, user_id)  # a merge that has not reached it yet
    assert client.delete(f"/api/users/{user_id}").status_code == 202
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": {"$in": [merged, pending]}}) == 0,
             what="every event of the user's visitors erased")
    assert mongo.events.count_documents({"user_id": -pending_id}) == 0
    assert visitor(merged) is None and visitor(pending) is None


def test_sent_at_corrects_the_client_clock_and_keeps_the_stated_time(client, mongo):
    user_id = signup(client)
    now = datetime.now(UTC)
    # The client's clock runs two days ahead: its instants look two days in the future.
    stated = now + timedelta(days=2) - timedelta(minutes=5)
    event = {**purchase(user_id, 5.0, "books"), "timestamp": stated.isoformat()}
    refused = client.post("/api/events/batch", json={"events": [event]})
    assert refused.status_code == 422 and refused.get_json()["errors"][0]["field"] == "events[0].timestamp"
    send(client, [event], sent_at=(now + timedelta(days=2)).isoformat())
    doc = wait_for(lambda: mongo.events.find_one({"event_id": event["event_id"]}), what="the corrected event")
    corrected = doc["timestamp"].replace(tzinfo=UTC)
    assert abs(corrected - (now - timedelta(minutes=5))) < timedelta(seconds=30)
    assert abs(doc["original_timestamp"].replace(tzinfo=UTC) - stated) < timedelta(milliseconds=1)
