"""Attacks on the promise (docs/api.md) "an event is `(user_id, event_id)`: re-sending an id never
duplicates, two people's ids never collide, every batch is counted exactly once".

Over HTTP against a real API server (granian, as `make dev` runs it) and the run's real workers,
MongoDB, Postgres and RabbitMQ: what a careless client (a tracker re-sending its buffer, two
shops choosing the same order ids) and an attacker (1,000 copies of a million purchase to make
a VIP and a top category) send. Where the attack is a message the API would never publish (a
batch with copies inside, delivered twice, or redelivered after SIGKILL), the test publishes it
to the worker itself, as an older API version or a replayed dead letter would.
"""
from __future__ import annotations

import os
import uuid
from decimal import Decimal

import pytest
import requests
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError
from sqlalchemy import text

from shared.infra import counters
from shared.infra.db import session_scope
from shared.pipeline import summaries
from tests.conftest import RUN_ID, TEST_ENV
from tests.fixtures import wait_for
from tests.helpers import KillableWorker, kill_between_storing_and_counting, purchase, signup_body

MILLION = 1_000_000


@pytest.fixture(scope="module")
def http(api, pipeline):
    session = requests.Session()
    # The run's development key (every scope; admin requests are never rate limited).
    session.headers["Authorization"] = f"Bearer {os.environ['PULSE_API_KEY']}"
    session.base = api
    yield session
    session.close()


def post(http, path: str, body: dict) -> requests.Response:
    return http.post(f"{http.base}{path}", json=body, timeout=60)


def signed_up(http, mongo) -> int:
    answer = post(http, "/api/users/signup", signup_body())
    assert answer.status_code == 201, answer.text
    user = answer.json()["id"]
    # Its user_created event stored and counted first: a recount later compares finished work.
    wait_for(lambda: mongo.events.find_one({"user_id": user, "event_type": "user_created"})
             and not any(drift(mongo, user).values()), timeout=60, what="the signup's event counted")
    return user


def drift(mongo, user_id: int) -> dict[str, int]:
    with session_scope() as session:
        found = {d.table: d.rows for d in summaries.check(mongo, session, [user_id])}
        session.rollback()
    return found


def spend(user_id: int) -> tuple[int, Decimal] | None:
    with session_scope() as session:
        row = session.execute(text("SELECT purchases, spent FROM customer_summaries WHERE user_id = :u"),
                              {"u": user_id}).first()
    return (row.purchases, row.spent) if row else None


def category_sales(category: str) -> tuple[int, Decimal] | None:
    with session_scope() as session:
        row = session.execute(text("SELECT purchases, spent FROM category_sales WHERE category = :c"),
                              {"c": category}).first()
    return (row.purchases, row.spent) if row else None


def copies(mongo, user_id: int, event_id: str) -> list[dict]:
    return list(mongo.events.find({"user_id": user_id, "event_id": event_id}))


def duplicates_counted() -> int:
    return counters.read()[counters.EVENTS_DUPLICATE]


def marker_stored(http, mongo, user_id: int) -> None:
    """A page view sent after everything else, waited for: with every earlier batch stored first
    (the worker takes messages in order, two at a time), what is not stored by now never will be."""
    marker = {"event_id": f"marker-{uuid.uuid4().hex}", "user_id": user_id, "event_type": "page_view",
              "metadata": {"page": "/marker"}}
    assert post(http, "/api/events", marker).status_code == 202
    wait_for(lambda: copies(mongo, user_id, marker["event_id"]), timeout=60, what="the marker stored")
    # MongoDB first, then the summaries' transaction (services.worker.storage): the marker is only
    # counted once its batch is in the ledger, and a drift read before that is the marker's own.
    batch_id = copies(mongo, user_id, marker["event_id"])[0]["batch_id"]

    def counted() -> bool:
        with session_scope() as session:
            return session.execute(text("SELECT 1 FROM applied_batches WHERE batch_id = :b"),
                                   {"b": batch_id}).first() is not None
    wait_for(counted, timeout=60, what="the marker counted")


def publish_batch(events: list[dict], batch_id: str) -> None:
    """A store_events message as the API publishes one (shared.contracts.schemas.StoreEventsMessage), with
    our own task id: the batch id every delivery of it carries."""
    from shared.contracts.topology import STORE_EVENTS
    from shared.infra.celery_app import create_celery_app

    app = create_celery_app("pulse-test-identity")
    documents = [{"timestamp": "2026-05-01T10:00:00+00:00", "geo": None, **e} for e in events]
    app.send_task(STORE_EVENTS, kwargs={"events": documents}, task_id=batch_id)


# ----------------------------------------------------------------------------- within one request


def test_a_thousand_copies_of_a_million_purchase_in_one_request_count_once(http, mongo):
    user = signed_up(http, mongo)
    category = f"adv-{uuid.uuid4().hex[:12]}"
    order = purchase(user, MILLION, category, event_id=f"order-{uuid.uuid4().hex[:8]}",
                     timestamp="2026-05-01T10:00:00+00:00")
    before = duplicates_counted()

    answer = post(http, "/api/events/batch", {"events": [order] * 1000})

    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 1, "duplicates": 999, "event_ids": [order["event_id"]] * 1000}
    wait_for(lambda: spend(user), timeout=60, what="the purchase counted")
    marker_stored(http, mongo, user)
    assert len(copies(mongo, user, order["event_id"])) == 1
    assert spend(user) == (1, Decimal(MILLION))
    assert category_sales(category) == (1, Decimal(MILLION))
    top = http.get(f"{http.base}/api/analytics/categories/top?limit=100", timeout=30).json()["items"]
    assert {"category": category, "total_sales": MILLION, "transactions": 1, "avg_price": MILLION} in top
    assert duplicates_counted() >= before + 999  # the copies are counted, as duplicates
    profile = wait_for(lambda: (p := http.get(f"{http.base}/api/users/{user}/profile", timeout=30).json())
                       ["totals"]["purchases"] == 1 and p, timeout=60, what="the profile with the purchase")
    assert profile["totals"]["total_spent"] == MILLION
    assert not any(drift(mongo, user).values())


def test_copies_of_one_event_with_different_content_are_refused_naming_them(http, mongo):
    user = signed_up(http, mongo)
    category = f"adv-{uuid.uuid4().hex[:12]}"
    first = purchase(user, 10.0, category, event_id="order-1", timestamp="2026-05-01T10:00:00+00:00")
    other = purchase(user, 20.0, category, event_id="order-2", timestamp="2026-05-01T10:00:00+00:00")
    cheaper = {**first, "metadata": {**first["metadata"], "price": 1.0}}
    later = {**first, "timestamp": "2026-05-02T10:00:00+00:00"}

    answer = post(http, "/api/events/batch", {"events": [first, other, cheaper, first, later]})

    assert answer.status_code == 422
    assert answer.headers["Content-Type"] == "application/problem+json"
    fields = [e["field"] for e in answer.json()["errors"]]
    assert fields == ["events[2].event_id", "events[4].event_id"]  # the identical events[3] is no error
    assert all("events[0]" in e["message"] for e in answer.json()["errors"])
    marker_stored(http, mongo, user)
    assert not copies(mongo, user, "order-1") and not copies(mongo, user, "order-2")  # all or nothing
    assert spend(user) is None and category_sales(category) is None


def test_a_batch_message_with_copies_inside_is_counted_once_by_the_worker(http, mongo):
    """The worker does not rely on the API having collapsed the copies: a message published by an
    older API, or a dead letter replayed, holds 50 copies of one purchase and two of another."""
    user = signed_up(http, mongo)
    category = f"adv-{uuid.uuid4().hex[:12]}"
    big = purchase(user, 5000.0, category, event_id="big")
    small = purchase(user, 7.5, category, event_id="small", timestamp="2026-05-02T10:00:00+00:00")
    # A copy of `small` with another price after the first: the first copy in the batch wins.
    wrong = {**small, "metadata": {**small["metadata"], "price": 9999.0}}

    publish_batch([big] * 50 + [small, wrong, small], f"copies-{uuid.uuid4().hex}")

    wait_for(lambda: spend(user), timeout=60, what="the batch counted")
    marker_stored(http, mongo, user)
    assert spend(user) == (2, Decimal("5007.5"))
    assert category_sales(category) == (2, Decimal("5007.5"))
    assert [d["metadata"]["price"] for d in copies(mongo, user, "small")] == [7.5]
    assert not any(drift(mongo, user).values())


# ----------------------------------------------------------------------------- across requests


def test_the_same_users_id_in_later_requests_is_stored_and_counted_once(http, mongo):
    user = signed_up(http, mongo)
    category = f"adv-{uuid.uuid4().hex[:12]}"
    order = purchase(user, 100.0, category, event_id=f"order-{uuid.uuid4().hex[:8]}",
                     timestamp="2026-05-01T10:00:00+00:00")
    assert post(http, "/api/events/batch", {"events": [order]}).status_code == 202
    wait_for(lambda: spend(user), timeout=60, what="the first copy counted")
    before = duplicates_counted()

    # A retry of the single endpoint, the same event in another batch, and a "correction" that
    # reuses the id: all answered 202 (the event is accepted), none of them stored or counted.
    assert post(http, "/api/events", order).status_code == 202
    assert post(http, "/api/events/batch", {"events": [order, purchase(user, 1.0, category)]}).status_code == 202
    corrected = {**order, "metadata": {**order["metadata"], "price": 900.0}}
    assert post(http, "/api/events", corrected).status_code == 202

    wait_for(lambda: duplicates_counted() >= before + 3, timeout=60, what="three duplicates counted")
    marker_stored(http, mongo, user)
    assert spend(user) == (2, Decimal("101"))  # the first copy and the new 1.0 purchase
    assert category_sales(category) == (2, Decimal("101"))
    assert [d["metadata"]["price"] for d in copies(mongo, user, order["event_id"])] == [100.0]  # first wins
    assert not any(drift(mongo, user).values())


def test_two_users_with_the_same_event_id_are_both_stored_and_counted(http, mongo):
    alice, bob = signed_up(http, mongo), signed_up(http, mongo)
    category = f"adv-{uuid.uuid4().hex[:12]}"
    event_id = f"order-{uuid.uuid4().hex[:8]}"
    view = {"event_id": event_id, "user_id": alice, "event_type": "page_view", "metadata": {"page": "/"}}
    assert post(http, "/api/events", view).status_code == 202
    wait_for(lambda: copies(mongo, alice, event_id), timeout=60, what="alice's page view stored")

    # Bob's purchase with Alice's id (another shop's order numbering): stored, not a duplicate.
    answer = post(http, "/api/events", purchase(bob, 250.0, category, event_id=event_id))
    assert answer.status_code == 202 and answer.json() == {"event_id": event_id}
    wait_for(lambda: spend(bob), timeout=60, what="bob's purchase counted")
    # Both users' same id in one batch is no conflict either: two events.
    shared_id = f"order-{uuid.uuid4().hex[:8]}"
    answer = post(http, "/api/events/batch", {"events": [purchase(alice, 3.0, category, event_id=shared_id),
                                                         purchase(bob, 4.0, category, event_id=shared_id)]})
    assert answer.status_code == 202 and answer.json()["accepted"] == 2 and answer.json()["duplicates"] == 0
    marker_stored(http, mongo, alice)
    marker_stored(http, mongo, bob)

    assert [d["event_type"] for d in copies(mongo, alice, event_id)] == ["page_view"]
    assert [d["event_type"] for d in copies(mongo, bob, event_id)] == ["user_purchase"]
    assert spend(alice) == (1, Decimal("3")) and spend(bob) == (2, Decimal("254"))
    assert category_sales(category) == (3, Decimal("257"))
    for user in (alice, bob):
        assert not any(drift(mongo, user).values())

    # Export and erasure follow the identity: each person's own events, never the other's.
    exported = http.get(f"{http.base}/api/users/{bob}/export", timeout=30).json()
    assert sorted((e["event_id"], e["event_type"]) for e in exported["events"] if e["event_id"] in (event_id,
                                                                                                    shared_id)) \
        == sorted([(event_id, "user_purchase"), (shared_id, "user_purchase")])
    assert http.delete(f"{http.base}/api/users/{alice}", timeout=30).status_code == 202
    wait_for(lambda: not mongo.events.find_one({"user_id": alice}), timeout=60, what="alice's events erased")
    assert len(copies(mongo, bob, event_id)) == 1 and len(copies(mongo, bob, shared_id)) == 1
    assert spend(bob) == (2, Decimal("254")) and category_sales(category) == (2, Decimal("254"))


def test_the_backfill_keys_events_by_user_and_id_and_counts_copies_once(http, mongo, tmp_path):
    """A history file where two shops' customers share order ids, one purchase is exported three
    times, and an undated line appears twice: each person's events stored and counted once, and a
    re-run (a resumed import) adds nothing."""
    import json
    import subprocess

    from tests.fixtures import PULSE, ROOT

    tag = uuid.uuid4().hex[:6]
    category = f"adv-{tag}"
    people = [{"username": f"{name}_{tag}", "email": f"{name}.{tag}@example.com", "full_name": "Backfill Person",
               "address": {"street": "Nowy Swiat 1", "city": "Warsaw", "country_code": "PL"}} for name in ("ann",
                                                                                                           "ben")]
    big = {"username": f"ann_{tag}", "event_id": "big", "event_type": "user_purchase",
           "timestamp": "2025-02-02T10:00:00Z", "metadata": {"product_id": "X", "price": 500, "category": category}}
    undated = {"username": f"ben_{tag}", "event_type": "page_view", "metadata": {"page": "/undated"}}
    lines = people + [
        {"username": f"ann_{tag}", "event_id": "order-1", "event_type": "user_purchase",
         "timestamp": "2025-02-01T10:00:00Z", "metadata": {"product_id": "A", "price": 10, "category": category}},
        {"username": f"ben_{tag}", "event_id": "order-1", "event_type": "page_view",
         "timestamp": "2025-02-01T10:00:00Z", "metadata": {"page": "/"}},
        big, big, big, undated, undated,
    ]
    path = tmp_path / "history.ndjson"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    def backfill() -> str:
        run = subprocess.run([PULSE, "backfill", str(path), "--quiet"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert "4 stored, 3 already stored" in backfill()
    with session_scope() as session:
        ids = dict(session.execute(text("SELECT username, id FROM users WHERE username IN (:a, :b)"),
                                   {"a": f"ann_{tag}", "b": f"ben_{tag}"}).all())
    ann, ben = ids[f"ann_{tag}"], ids[f"ben_{tag}"]
    assert [d["event_type"] for d in copies(mongo, ann, "order-1")] == ["user_purchase"]
    assert [d["event_type"] for d in copies(mongo, ben, "order-1")] == ["page_view"]
    assert len(copies(mongo, ann, "big")) == 1 and mongo.events.count_documents({"user_id": ben}) == 2
    assert spend(ann) == (2, Decimal("510")) and spend(ben) is None
    assert category_sales(category) == (2, Decimal("510"))

    assert "0 stored, 7 already stored" in backfill()
    assert spend(ann) == (2, Decimal("510")) and mongo.events.count_documents({"user_id": ben}) == 2
    for user in (ann, ben):
        assert not any(drift(mongo, user).values())


# ----------------------------------------------------------------------------- redelivery


def test_a_batch_delivered_twice_is_counted_exactly_once(http, mongo):
    user = signed_up(http, mongo)
    category = f"adv-{uuid.uuid4().hex[:12]}"
    events = [purchase(user, 40.0, category, event_id="a"), purchase(user, 2.0, category, event_id="b"),
              purchase(user, 40.0, category, event_id="a")]
    batch_id = f"twice-{uuid.uuid4().hex}"

    publish_batch(events, batch_id)
    wait_for(lambda: spend(user), timeout=60, what="the batch counted")
    publish_batch(events, batch_id)  # a redelivery after the commit (a replayed message)
    marker_stored(http, mongo, user)

    assert spend(user) == (2, Decimal("42"))
    assert category_sales(category) == (2, Decimal("42"))
    assert not any(drift(mongo, user).values())


def test_a_batch_with_copies_inside_redelivered_after_sigkill_is_counted_once(http, mongo):
    """The original finding at its sharpest: the worker is killed after storing a batch that holds
    copies of one purchase, before counting it; the redelivered message finds every copy's key
    stored with its own batch id. It must count the purchase once, not once per copy."""
    from shared.contracts.settings import Settings
    from shared.contracts.topology import STORE_EVENTS
    from shared.infra.celery_app import create_celery_app

    user = signed_up(http, mongo)
    category = f"adv-{uuid.uuid4().hex[:12]}"
    order = purchase(user, 300.0, category, event_id="order", timestamp="2026-05-01T10:00:00+00:00", geo=None)
    other = purchase(user, 5.0, category, event_id="other", timestamp="2026-05-02T10:00:00+00:00", geo=None)
    documents = [order, order, other, order]
    batch_id = f"kill-{uuid.uuid4().hex}"
    publisher = create_celery_app("pulse-test-identity-kill", settings=Settings(queue_prefix=KillableWorker.prefix))
    worker = KillableWorker()
    try:
        kill_between_storing_and_counting(
            worker, publisher, documents, batch_id,
            lambda: mongo.events.count_documents({"user_id": user, "batch_id": batch_id}) == 2)
        assert spend(user) is None  # stored, never counted

        worker.start(publisher)  # the broker redelivers the unacknowledged message
        wait_for(lambda: spend(user), timeout=90, what="the redelivered batch counted")
        # Once more after the commit, then a marker behind it in the same queue (one solo worker).
        publisher.send_task(STORE_EVENTS, kwargs={"events": documents}, task_id=batch_id)
        marker = purchase(user, 1.0, category, event_id="marker", timestamp="2026-05-03T10:00:00+00:00", geo=None)
        publisher.send_task(STORE_EVENTS, kwargs={"events": [marker]})
        wait_for(lambda: spend(user)[0] == 3, timeout=60, what="the marker counted")
    finally:
        worker.stop()
    assert spend(user) == (3, Decimal("306"))
    assert category_sales(category) == (3, Decimal("306"))
    assert not any(drift(mongo, user).values())


# ----------------------------------------------------------------------------- migration


def test_the_identity_migration_moves_a_populated_database(services):
    """A database of the previous version (unique `event_id`, events of many users; a thousand or
    so, as building an index on the dev server costs milliseconds per document) moves to `(user_id, event_id)` at start:
    every event kept, the old index gone, and from
    then on two users may share an id while one user may not repeat it. Run twice: idempotent."""
    from shared.infra.mongo import prepare_database

    name = f"pulse_migration_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    uri = f"{TEST_ENV['MONGO_URI'].rsplit('/', 1)[0]}/{name}"
    client = MongoClient(uri)
    db = client[name]
    try:
        db.events.create_index([("event_id", 1)], unique=True, name="uq_event_id")
        db.events.create_index([("user_id", 1), ("timestamp", -1)], name="ix_user_time")
        db.events.insert_many([{"event_id": f"e-{i}", "user_id": i % 500, "event_type": "page_view",
                                "batch_id": f"b-{i // 100}"} for i in range(1_500)], ordered=False)

        prepare_database(uri)
        prepare_database(uri)  # a second process starting, or the next start

        indexes = db.events.index_information()
        assert "uq_event_id" not in indexes
        assert indexes["uq_user_event"]["key"] == [("user_id", 1), ("event_id", 1)]
        assert indexes["uq_user_event"]["unique"] is True
        assert db.events.count_documents({}) == 1_500
        assert db.events.find_one({"event_id": "e-1234"})["user_id"] == 1234 % 500
        db.events.insert_one({"event_id": "e-1", "user_id": 2, "event_type": "page_view"})  # another user
        with pytest.raises(DuplicateKeyError):
            db.events.insert_one({"event_id": "e-1", "user_id": 1, "event_type": "page_view"})  # the same user
    finally:
        client.drop_database(name)
        client.close()
