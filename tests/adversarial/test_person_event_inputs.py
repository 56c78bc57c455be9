"""Attacks on person_events (issue 24), "one row per stored event, exactly once, users' and
visitors' alike": metadata Postgres' jsonb cannot hold, workers storing overlapping batches at once,
a visitor's batch killed before it counted and redelivered after the visitor was identified.

The real API (Flask client), worker, Postgres, RabbitMQ, Redis and MongoDB-wire server; the races
call the worker's own storage path (services.worker.storage.store_batch) from threads."""
from __future__ import annotations

import json
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from services.worker.storage import insert_events, store_batch
from shared.infra.db import session_scope
from shared.pipeline import person_events
from tests.fixtures import wait_for
from tests.helpers import signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


def rows(person_ids: list[int]) -> dict[tuple[int, str], tuple[str, datetime, dict]]:
    with session_scope() as session:
        found = session.execute(text(
            "SELECT person_id, event_id, event_type, at, properties FROM person_events "
            "WHERE person_id = ANY(CAST(:p AS bigint[]))"), {"p": person_ids}).all()
    return {(r.person_id, r.event_id): (r.event_type, r.at, r.properties) for r in found}


def expected(mongo, person_ids: list[int]) -> dict[tuple[int, str], tuple[str, datetime, dict]]:
    found = {}
    for doc in mongo.events.find({"user_id": {"$in": person_ids}}):
        person_id, event_id, event_type, at, props = person_events.row(doc)
        found[(person_id, event_id)] = (event_type, at, json.loads(props))
    return found


def signup(client) -> int:
    response = client.post("/api/users/signup", json=signup_body())
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


def send(client, events: list[dict]) -> None:
    response = client.post("/api/events/batch", json={"events": events})
    assert response.status_code == 202, response.get_json()


def schedule(delay: float) -> None:
    """What the worker's storage path is given: a real drain, so the users these tests change are
    rescored (a no-op would leave the shared "drain scheduled" flag set with no drain coming, and
    stall rescoring for the tests after these until it expires)."""
    from services.worker.tasks import _schedule_rescore

    _schedule_rescore(delay)


def test_metadata_jsonb_cannot_hold_does_not_fail_the_batch(client, mongo):
    # A NUL inside a custom metadata value is valid JSON and stored by MongoDB; jsonb refuses
    # U+0000. Had it reached Postgres, the whole batch (and the other person's event) would fail
    # for ever, retried and dead-lettered.
    user, anon = signup(client), f"anon-{uuid.uuid4().hex}"
    odd = {"event_id": uuid.uuid4().hex, "user_id": user, "event_type": "odd_values",
           "metadata": {"nul": "a\u0000b", "ok": "fine", "n": 1, "huge": 9_007_199_254_740_993}}
    other = {"event_id": uuid.uuid4().hex, "anonymous_id": anon, "event_type": "odd_values",
             "metadata": {"nul": "\u0000"}}
    send(client, [odd, other])
    wait_for(lambda: mongo.events.count_documents({"event_id": {"$in": [odd["event_id"], other["event_id"]]}}) == 2,
             timeout=60, what="both stored")
    stored = mongo.events.find_one({"event_id": other["event_id"]})
    persons = [user, int(stored["user_id"])]
    wait_for(lambda: len(rows(persons)) == 3 and rows(persons) == expected(mongo, persons), timeout=60,
             what="rows of both events and the signup")
    assert rows(persons)[(user, odd["event_id"])][2] == {"ok": "fine", "n": 1, "huge": 9_007_199_254_740_993}
    assert rows(persons)[(persons[1], other["event_id"])][2] == {}


def test_workers_storing_overlapping_batches_at_once_add_each_event_once(client, mongo):
    # Four "workers" store four batches at once, each holding the same 300 events of 10 users and
    # 5 visitors in its own order, plus 20 events of its own: every event is stored by one batch,
    # so one row each, and no two batches deadlock on person_events' keys.
    users = [signup(client) for _ in range(10)]
    visitors = []
    with session_scope() as session:
        for _ in range(5):
            visitors.append(-int(session.scalar(text(
                "INSERT INTO visitors (anonymous_id) VALUES (:a) RETURNING id"), {"a": f"anon-{uuid.uuid4().hex}"})))
    persons = users + visitors
    start = datetime(2026, 6, 1, tzinfo=UTC)

    def event(person: int, i: int) -> dict:
        return {"event_id": f"race-{uuid.uuid4().hex}", "user_id": person, "event_type": "page_view",
                "timestamp": start + timedelta(minutes=i), "received_at": start, "geo": None,
                "metadata": {"page": f"/p{i % 7}"}}

    common = [event(random.choice(persons), i) for i in range(300)]

    def batch(worker: int) -> bool:
        docs = [dict(d) for d in common] + [event(random.choice(persons), 1000 + i) for i in range(20)]
        random.Random(worker).shuffle(docs)
        return store_batch(mongo, f"race-{worker}-{uuid.uuid4().hex}", docs, schedule).applied

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(batch, range(4)))
    # Each user's signup event too (stored by the session's worker meanwhile).
    wait_for(lambda: len(expected(mongo, persons)) == 300 + 4 * 20 + len(users)
             and rows(persons) == expected(mongo, persons), timeout=60, what="rows equal to MongoDB")


def test_a_visitors_batch_killed_before_counting_and_redelivered_after_identify_counts_once(client, mongo):
    # Attempt 1 stored the visitor's events under its negative id and died before its transaction;
    # identify links the visitor and its merge copies the events; the redelivery then stores the
    # same events as the user's. Whichever stores a copy first counts it: one row per event, under
    # the user, none left under the visitor.
    user, anon = signup(client), f"anon-{uuid.uuid4().hex}"
    send(client, [{"event_id": uuid.uuid4().hex, "anonymous_id": anon, "event_type": "page_view"}])
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon}) == 1, timeout=60, what="the visitor")
    visitor = int(mongo.events.find_one({"anonymous_id": anon})["user_id"])
    now = datetime.now(UTC)
    sent = [{"event_id": f"k{i}", "anonymous_id": anon, "event_type": "signup_step", "timestamp": now,
             "received_at": now, "geo": None, "metadata": {"step": i}} for i in range(3)]
    batch = f"killed-{uuid.uuid4().hex}"
    insert_events(mongo.events, [{**d, "user_id": visitor} for d in sent], batch)  # attempt 1, then SIGKILL
    assert client.post("/api/identify", json={"anonymous_id": anon, "user_id": user}).status_code == 200
    wait_for(lambda: mongo.events.count_documents({"user_id": visitor}) == 0, timeout=60, what="the merge")
    assert not store_batch(mongo, batch, [dict(d) for d in sent], schedule).inserted  # the redelivery
    wait_for(lambda: mongo.events.count_documents({"user_id": user}) == 5, timeout=60,
             what="user_created, the visit, k0-k2 under the user")
    assert rows([visitor]) == {}
    assert rows([user]) == expected(mongo, [user])
