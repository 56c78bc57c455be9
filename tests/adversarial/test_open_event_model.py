"""Attacks on the promises of issue 23 (docs/api.md "Anonymous visitors and identify", "Client
clocks"; docs/segment.md): what a careless client or an attacker sends, over HTTP against a real
API server process and the run's real workers and stores. Every refusal is a 4xx naming its field,
never a 500; whatever was accepted is stored and counted exactly once."""
from __future__ import annotations

import os
import threading
import uuid

import pytest
import requests
from sqlalchemy import text

from shared.infra.db import session_scope
from tests.fixtures import wait_for
from tests.helpers import signup_body


@pytest.fixture(scope="module")
def http(api, pipeline):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {os.environ['PULSE_API_KEY']}"
    session.base = api
    yield session
    session.close()


def post(http, path: str, body: dict, **kwargs) -> requests.Response:
    return http.post(f"{http.base}{path}", json=body, timeout=60, **kwargs)


def fields(answer: requests.Response) -> set[str]:
    return {problem["field"] for problem in answer.json().get("errors", [])}


def signed_up(http) -> int:
    answer = post(http, "/api/users/signup", signup_body())
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


# --------------------------------------------------------------------------- client clocks

# Instants at the ends of what Python's datetime holds: moving them to UTC, or by a sent_at
# millennia away, leaves the calendar. Each must be a 422 naming the field, never a 500.
EDGE_TIMESTAMPS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


@pytest.mark.parametrize("timestamp", EDGE_TIMESTAMPS)
def test_a_timestamp_off_the_calendar_in_utc_is_a_422(http, timestamp):
    one = post(http, "/api/events", {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": timestamp})
    assert one.status_code == 422, one.text
    assert "timestamp" in fields(one)
    batch = post(http, "/api/events/batch", {"events": [
        {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": timestamp}]})
    assert batch.status_code == 422, batch.text
    assert "events[0].timestamp" in fields(batch)


@pytest.mark.parametrize("sent_at", EDGE_TIMESTAMPS)
def test_a_sent_at_off_the_calendar_in_utc_is_a_422(http, sent_at):
    answer = post(http, "/api/events/batch", {"sent_at": sent_at, "events": [
        {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": "2026-01-01T00:00:00Z"}]})
    assert answer.status_code == 422, answer.text
    assert "sent_at" in fields(answer)


@pytest.mark.parametrize(("sent_at", "timestamp"), [
    ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),  # corrected beyond year 9999
    ("9999-12-31T00:00:00Z", "1970-01-02T00:00:00Z"),  # corrected before year 1
])
def test_a_sent_at_millennia_from_the_timestamp_is_a_422(http, sent_at, timestamp):
    answer = post(http, "/api/events/batch", {"sent_at": sent_at, "events": [
        {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": timestamp}]})
    assert answer.status_code == 422, answer.text
    assert "events[0].timestamp" in fields(answer)


@pytest.mark.parametrize("timestamp", EDGE_TIMESTAMPS)
def test_segment_a_timestamp_off_the_calendar_is_refused_naming_it(http, timestamp):
    answer = post(http, "/v1/track", {"anonymousId": "seg-clock", "event": "Clock Edge", "timestamp": timestamp})
    assert 400 <= answer.status_code < 500, answer.text
    assert any("timestamp" in f for f in fields(answer)), answer.text
    batch = post(http, "/v1/batch", {"batch": [
        {"type": "track", "anonymousId": "seg-clock", "event": "Clock Edge", "timestamp": timestamp}]})
    # A batch answers 200 with what it refused (docs/segment.md): the rest of the batch is kept.
    assert batch.status_code == 200, batch.text
    assert [r["field"] for r in batch.json()["refused"]] == ["batch[0].timestamp"]


# --------------------------------------------------------------------------- identify, exactly once

def anonymous_purchase(anonymous_id: str, price: float = 1.0, **extra) -> dict:
    return {"event_id": extra.pop("event_id", uuid.uuid4().hex), "anonymous_id": anonymous_id,
            "event_type": "user_purchase",
            "metadata": {"product_id": "P-attack", "price": price, "category": "attack"}, **extra}


def purchases_counted(user_id: int) -> int:
    with session_scope() as session:
        row = session.execute(text("SELECT purchases FROM customer_summaries WHERE user_id = :u"),
                              {"u": user_id}).first()
    return int(row.purchases) if row else 0


def visitor_owner(anonymous_id: str) -> int | None:
    with session_scope() as session:
        return session.scalar(text("SELECT user_id FROM visitors WHERE anonymous_id = :a"), {"a": anonymous_id})


def drifted(mongo, user_id: int) -> dict[str, int]:
    """The summary tables whose rows for the user differ from a recount of its stored events."""
    from shared.pipeline import summaries

    with session_scope() as session:
        found = {d.table: d.rows for d in summaries.check(mongo, session, [user_id]) if d.rows}
        session.rollback()
    return found


@pytest.mark.parametrize("seen_before", [False, True], ids=["new-visitor", "visitor-with-events"])
def test_one_visitor_identified_as_two_users_at_once_goes_to_exactly_one(http, mongo, seen_before):
    """Two tabs of two people (or an attacker) identify one anonymous id at the same instant:
    exactly one link is made, the other is a 409, and the visitor's events go to the winner only."""
    first, second = signed_up(http), signed_up(http)
    for _ in range(6):
        anonymous_id = f"race-{uuid.uuid4().hex}"
        if seen_before:
            sent = post(http, "/api/events/batch", {"events": [anonymous_purchase(anonymous_id) for _ in range(3)]})
            assert sent.status_code == 202, sent.text
            wait_for(lambda: mongo.events.count_documents({"anonymous_id": anonymous_id}) == 3, timeout=60,
                     what="the visitor's events stored")
        barrier = threading.Barrier(4)
        answers: list[tuple[int, requests.Response]] = []

        def identify(user_id: int) -> None:
            barrier.wait()
            answer = post(http, "/api/identify", {"anonymous_id": anonymous_id, "user_id": user_id})
            answers.append((user_id, answer))

        threads = [threading.Thread(target=identify, args=(u,)) for u in (first, second, first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        codes = sorted(a.status_code for _, a in answers)
        assert codes == [200, 200, 409, 409], [(u, a.status_code, a.text) for u, a in answers]
        winners = {u for u, a in answers if a.status_code == 200}
        assert len(winners) == 1
        winner = winners.pop()
        assert sum(a.json()["linked"] for _, a in answers if a.status_code == 200) == 1
        assert visitor_owner(anonymous_id) == winner
        if seen_before:
            wait_for(lambda: mongo.events.count_documents({"anonymous_id": anonymous_id, "user_id": winner}) == 3
                     and mongo.events.count_documents({"anonymous_id": anonymous_id}) == 3,
                     timeout=60, what="the visitor's events merged to the winner")
    wait_for(lambda: not drifted(mongo, first) and not drifted(mongo, second), timeout=60, what="summaries settled")


def test_identify_racing_the_visitors_stream_counts_every_event_once(http, mongo):
    """A visitor keeps sending purchases (anonymous only, and some carrying both ids) while it is
    identified mid-stream: at the end every purchase is the user's, counted once, and no document
    of the visitor is left under a negative id."""
    user = signed_up(http)
    anonymous_id = f"stream-{uuid.uuid4().hex}"
    batches, per_batch = 24, 20
    started = threading.Event()
    failures: list[str] = []

    def stream() -> None:
        for number in range(batches):
            events = [anonymous_purchase(anonymous_id) for _ in range(per_batch)]
            if number % 6 == 5:  # now and then the tracker knows the user too
                events[0] = {**events[0], "user_id": user}
            answer = post(http, "/api/events/batch", {"events": events})
            if answer.status_code != 202:
                failures.append(answer.text)
            if number == 3:
                started.set()

    sender = threading.Thread(target=stream)
    sender.start()
    assert started.wait(60)
    identified = post(http, "/api/identify", {"anonymous_id": anonymous_id, "user_id": user})
    sender.join(120)
    assert identified.status_code == 200, identified.text
    assert not failures, failures
    total = batches * per_batch
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anonymous_id, "user_id": user}) == total
             and purchases_counted(user) == total, timeout=120,
             what=f"{total} purchases the user's, counted")
    assert mongo.events.count_documents({"anonymous_id": anonymous_id, "user_id": {"$lt": 0}}) == 0
    assert purchases_counted(user) == total
    assert not drifted(mongo, user)
