"""person_events (issue 24): one row per stored event, users' and visitors', equal to what MongoDB
`events` holds after a batch with copies inside it, a redelivery, a worker killed mid-batch, a
visitor's merge into its user, an erasure; `pulse summaries rebuild --check` sees any difference.

Everything real: the API, the relay, the session's worker (and a killable one of the test's own),
Postgres, RabbitMQ, Redis and the MongoDB-wire server."""
import json
import subprocess
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from services.worker.merge import batch_id as merge_batch_id
from services.worker.merge import copies, merge_visitor
from services.worker.storage import store_batch
from shared.infra.db import session_scope
from shared.pipeline import data_version, person_events, summaries
from tests.fixtures import PULSE, ROOT, wait_for
from tests.helpers import KillableWorker, kill_between_storing_and_counting, purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")

Rows = dict[str, tuple[str, datetime, dict[str, Any]]]


def rows_in_postgres(person_id: int) -> Rows:
    with session_scope() as session:
        found = session.execute(text(
            "SELECT event_id, event_type, at, properties FROM person_events WHERE person_id = :p"),
            {"p": person_id}).all()
    return {r.event_id: (r.event_type, r.at, r.properties) for r in found}


def rows_in_mongodb(mongo, person_id: int) -> Rows:
    """What person_events must hold for the person: one row per stored document, as the worker derives it."""
    expected: Rows = {}
    for doc in mongo.events.find({"user_id": person_id}):
        _, event_id, event_type, at, props = person_events.row(doc)
        expected[event_id] = (event_type, at, json.loads(props))
    return expected


def agrees(mongo, person_id: int, events: int) -> bool:
    """MongoDB holds `events` documents of the person and person_events exactly their rows."""
    expected = rows_in_mongodb(mongo, person_id)
    return len(expected) == events and rows_in_postgres(person_id) == expected


def drift(mongo, user_id: int) -> dict[str, int]:
    with session_scope() as session:
        found = {d.table: d.rows for d in summaries.check(mongo, session, [user_id])}
        session.rollback()
    return found


def signup(client, **overrides) -> int:
    response = client.post("/api/users/signup", json=signup_body(**overrides))
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


@pytest.fixture()
def user_id(client, mongo):
    user = signup(client)
    wait_for(lambda: agrees(mongo, user, 1), what="the signup's user_created event in person_events")
    return user


def send(client, events: list[dict]) -> dict:
    response = client.post("/api/events/batch", json={"events": events})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def anonymous() -> str:
    return f"anon-{uuid.uuid4().hex}"


def visit(anonymous_id: str, **extra) -> dict:
    return {"event_id": extra.pop("event_id", uuid.uuid4().hex), "anonymous_id": anonymous_id,
            "event_type": "page_view", "metadata": {"page": "/pricing"}, **extra}


def visitor_id(anonymous_id: str) -> int:
    with session_scope() as session:
        return int(session.scalar(text("SELECT id FROM visitors WHERE anonymous_id = :a"), {"a": anonymous_id}))


def schedule(delay: float) -> None:
    """What the worker's storage path is given: a real drain, so the users these tests change are
    rescored (a no-op would leave the shared "drain scheduled" flag set with no drain coming, and
    stall rescoring for the tests after these until it expires)."""
    from services.worker.tasks import _schedule_rescore

    _schedule_rescore(delay)


def test_a_batch_with_copies_inside_and_its_redeliveries_add_one_row_per_stored_event(client, mongo, user_id):
    version = data_version.current()
    trial = {"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "trial_started",
             "timestamp": "2026-03-02T09:00:00.123456Z",
             "metadata": {"plan": "pro", "seats": 3, "ratio": 0.5, "annual": True, "nested": {"a": 1},
                          "tags": ["x"], "note": "n" * 201, "empty": None}}
    buy = purchase(user_id, 49.5, "books", timestamp="2026-03-03T10:00:00Z")
    view = {"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "page_view",
            "timestamp": "2026-03-01T08:00:00Z", "metadata": {"page": "/pricing"}}
    answer = send(client, [trial, buy, trial, view, buy, trial])  # copies inside one batch
    assert answer["accepted"] == 3 and answer["duplicates"] == 3, answer
    wait_for(lambda: agrees(mongo, user_id, 4), what="3 events + the signup in person_events")
    rows = rows_in_postgres(user_id)
    assert rows[trial["event_id"]] == ("trial_started", datetime(2026, 3, 2, 9, 0, 0, 123000, tzinfo=UTC),
                                       {"plan": "pro", "seats": 3, "ratio": 0.5, "annual": True})
    assert rows[buy["event_id"]][2] == {"product_id": "P-books", "price": 49.5, "category": "books"}
    # A funnel step's `where` matches by jsonb containment: a bool is not the number 1.
    with session_scope() as session:
        matches = session.scalars(text(
            "SELECT event_id FROM person_events WHERE person_id = :p AND properties @> CAST(:w AS jsonb)"),
            {"p": user_id, "w": json.dumps({"annual": True, "seats": 3})}).all()
        assert matches == [trial["event_id"]]
        assert not session.scalar(text(
            "SELECT count(*) FROM person_events WHERE person_id = :p AND properties @> '{\"annual\": 1}'"),
            {"p": user_id})
    # The worker bumps the insight data version after the commit.
    wait_for(lambda: data_version.current() > version, what="the data version bumped")

    # The same events re-sent in a new message: stored already by another batch, no row added.
    send(client, [trial, buy, view])
    marker = {"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "login"}
    send(client, [marker])
    wait_for(lambda: agrees(mongo, user_id, 5), what="the marker's row")

    # The same batch redelivered (one batch id, twice through the one storage path): nothing added.
    docs = [{"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "search", "geo": None,
             "timestamp": purchase_time(i), "received_at": purchase_time(i), "metadata": {"q": f"q{i}"}}
            for i in range(3)]
    batch = f"redelivered-{uuid.uuid4().hex}"
    first = store_batch(mongo, batch, [dict(d) for d in docs], schedule)
    again = store_batch(mongo, batch, [dict(d) for d in docs], schedule)
    assert (first.applied, again.applied) == (True, False)
    assert agrees(mongo, user_id, 8)
    assert drift(mongo, user_id)["person_events"] == 0


def purchase_time(i: int) -> datetime:
    return datetime(2026, 4, 1 + i, 10, 0, tzinfo=UTC)


def test_a_worker_killed_mid_batch_then_redelivered_adds_each_row_once(mongo, user_id, killable):
    from shared.contracts.settings import Settings
    from shared.infra.celery_app import create_celery_app

    publisher = create_celery_app("pulse-test-kill-pe", settings=Settings(queue_prefix=KillableWorker.prefix))
    events = [{**purchase(user_id, 10.0 + i, "sports", timestamp=f"2026-05-0{i + 1}T10:00:00+00:00"), "geo": None}
              for i in range(3)]
    batch = f"kill-{uuid.uuid4().hex}"
    ids = [e["event_id"] for e in events]
    kill_between_storing_and_counting(
        killable, publisher, events, batch,
        lambda: mongo.events.count_documents({"event_id": {"$in": ids}, "batch_id": batch}) == 3)
    assert set(rows_in_postgres(user_id)) & set(ids) == set()  # stored in MongoDB, not counted
    killable.start(publisher)  # the broker redelivers the unacknowledged message
    wait_for(lambda: agrees(mongo, user_id, 4), timeout=90, what="the redelivered batch's rows")
    assert drift(mongo, user_id)["person_events"] == 0


def test_a_visitors_rows_move_to_its_user_on_identify_and_a_colliding_event_counts_once(client, mongo, user_id):
    anon = anonymous()
    collide = uuid.uuid4().hex
    send(client, [{"event_id": collide, "user_id": user_id, "event_type": "page_view",
                   "metadata": {"page": "/pricing"}}])
    send(client, [visit(anon) for _ in range(3)] + [visit(anon, event_id=collide)])
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon}) == 4, what="the visits stored")
    visitor = visitor_id(anon)
    wait_for(lambda: agrees(mongo, -visitor, 4), what="the visitor's 4 rows, under its negative id")
    assert agrees(mongo, user_id, 2)

    version = data_version.current()
    assert client.post("/api/identify", json={"anonymous_id": anon, "user_id": user_id}).status_code == 200
    wait_for(lambda: mongo.events.count_documents({"user_id": -visitor}) == 0, what="the merge done")
    # 1 signup + the user's own page view (the colliding id: once) + 3 visits moved.
    wait_for(lambda: agrees(mongo, user_id, 5), what="the visits' rows under the user")
    assert rows_in_postgres(-visitor) == {}
    with session_scope() as session:
        assert session.scalar(text("SELECT count(*) FROM person_events WHERE event_id = :e AND person_id IN (:u, :v)"),
                              {"e": collide, "u": user_id, "v": -visitor}) == 1
    wait_for(lambda: data_version.current() > version, what="the data version bumped by the merge")
    assert drift(mongo, user_id)["person_events"] == 0


def test_a_merge_killed_after_its_commit_and_redelivered_leaves_each_row_once(client, mongo, user_id):
    anon = anonymous()
    send(client, [visit(anon, event_id=f"m{i}") for i in range(5)])
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon}) == 5, what="5 visits")
    visitor = visitor_id(anon)
    wait_for(lambda: agrees(mongo, -visitor, 5), what="the visitor's rows")
    with session_scope() as session:  # the link as identify commits it, minus the merge's message
        session.execute(text("UPDATE visitors SET user_id = :u, linked_at = now() WHERE id = :v"),
                        {"u": user_id, "v": visitor})
    # Attempt 1 of the first page applied its copies (and moved every row of the visitor to the
    # user: a funnel between pages must not see two persons), then died after deleting one of the
    # page's two documents.
    page = list(mongo.events.find({"user_id": -visitor}).sort("event_id", 1).limit(2))
    store_batch(mongo, merge_batch_id(visitor, page), copies(page, user_id), schedule,
                resolve_visitors=False, ingested=False, moved_from=-visitor)
    assert rows_in_postgres(-visitor) == {}
    assert {"m0", "m1", "m2", "m3", "m4"} <= set(rows_in_postgres(user_id))
    mongo.events.delete_one({"user_id": -visitor, "event_id": page[0]["event_id"]})
    merge_visitor(mongo, visitor, user_id, schedule, page_size=2)
    merge_visitor(mongo, visitor, user_id, schedule, page_size=2)
    assert rows_in_postgres(-visitor) == {}
    assert agrees(mongo, user_id, 6)


def test_erasing_a_user_leaves_no_row_of_it_or_its_visitors(client, mongo, user_id):
    merged, pending = anonymous(), anonymous()
    send(client, [visit(merged), visit(pending), visit(pending)])
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": {"$in": [merged, pending]}}) == 3,
             what="the visits")
    assert client.post("/api/identify", json={"anonymous_id": merged, "user_id": user_id}).status_code == 200
    wait_for(lambda: agrees(mongo, user_id, 2), what="the first visitor merged")
    pending_id = visitor_id(pending)
    with session_scope() as session:  # linked, its merge not run yet: its rows are still its own
        session.execute(text("UPDATE visitors SET user_id = :u, linked_at = now() WHERE id = :v"),
                        {"u": user_id, "v": pending_id})
    assert len(rows_in_postgres(-pending_id)) == 2
    version = data_version.current()
    assert client.delete(f"/api/users/{user_id}").status_code == 202
    # Step 1 (the DELETE's transaction) took them: schedule to wait for.
    assert rows_in_postgres(user_id) == {} and rows_in_postgres(-pending_id) == {}
    assert data_version.current() > version
    # A batch for the erased user that raced the erasure adds no row (the user row is gone).
    store_batch(mongo, f"late-{uuid.uuid4().hex}",
                [{"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "login",
                  "timestamp": purchase_time(0), "received_at": purchase_time(0), "metadata": {}, "geo": None}],
                schedule)
    assert rows_in_postgres(user_id) == {}
    wait_for(lambda: mongo.events.count_documents({"user_id": {"$in": [user_id, -pending_id]}}) == 0,
             what="MongoDB erased too")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PULSE, "summaries", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_rebuild_check_reports_a_missing_row_and_rebuild_puts_it_back(client, mongo, user_id):
    event = {"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "trial_started",
             "metadata": {"plan": "pro", "tab": "a\tb"}}
    send(client, [event])
    wait_for(lambda: agrees(mongo, user_id, 2), what="the event's row")
    clean = cli("rebuild", "--check", "--user", str(user_id))
    assert clean.returncode == 0 and "no drift" in clean.stdout, clean.stdout + clean.stderr
    with session_scope() as session:
        session.execute(text("DELETE FROM person_events WHERE person_id = :p AND event_id = :e"),
                        {"p": user_id, "e": event["event_id"]})
        session.execute(text("UPDATE person_events SET properties = '{\"x\": 1}' WHERE person_id = :p"),
                        {"p": user_id})
    found = cli("rebuild", "--check", "--user", str(user_id))
    assert found.returncode == 1, found.stdout + found.stderr
    assert "person_events        DRIFT: 1 missing, 0 extra, 1 different" in found.stdout, found.stdout
    version = data_version.current()
    repaired = cli("rebuild", "--user", str(user_id))
    assert repaired.returncode == 0 and "person_events 2" in repaired.stdout, repaired.stdout + repaired.stderr
    assert agrees(mongo, user_id, 2)
    assert data_version.current() > version
    assert cli("rebuild", "--check", "--user", str(user_id)).returncode == 0
