"""Customer summaries and counters: exactly once per batch, equal to a recount, through a crash.

The crash is real: a worker of this test's own (its own queues, `--pool solo`) is killed with
SIGKILL while it waits for Postgres, after it has stored the batch in MongoDB and before it has
counted it; a new worker then receives the redelivered message.
"""
import subprocess
import uuid
from datetime import date
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from shared.contracts.tables import CustomerCategory, CustomerSummary
from shared.infra.db import session_scope
from shared.pipeline import summaries
from tests.conftest import TEST_ENV
from tests.fixtures import PULSE, ROOT, wait_for
from tests.helpers import KillableWorker, kill_between_storing_and_counting, purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


@pytest.fixture()
def user_id(client, mongo):
    user = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
    # The signup's own user_created event is stored and counted by the worker on its own queue;
    # wait until it is, so that a recount later compares finished work, not one in flight.
    wait_for(lambda: mongo.events.find_one({"user_id": user, "event_type": "user_created"})
             and drift(mongo, user) == NO_DRIFT, what="the signup's user_created event counted")
    return user


def summary(user_id: int) -> CustomerSummary | None:
    with session_scope() as session:
        return session.get(CustomerSummary, user_id)


def categories(user_id: int) -> dict[str, tuple[int, Decimal]]:
    with session_scope() as session:
        rows = session.scalars(select(CustomerCategory).where(CustomerCategory.user_id == user_id))
        return {row.category: (row.purchases, row.spent) for row in rows}


def drift(mongo, user_id: int) -> dict[str, int]:
    with session_scope() as session:
        found = {d.table: d.rows for d in summaries.check(mongo, session, [user_id])}
        session.rollback()
    return found


NO_DRIFT = {"activity_days": 0, "purchase_days": 0, "customer_summaries": 0, "customer_categories": 0,
            "person_events": 0}


def test_summaries_follow_purchases_in_any_order_and_count_each_once(client, mongo, user_id):
    later = [
        purchase(user_id, 10.0, "books", timestamp="2026-03-02T09:00:00Z"),
        purchase(user_id, 5.0, "toys", timestamp="2026-03-02T23:30:00Z"),
        purchase(user_id, 7.25, "books", timestamp="2026-03-09T12:00:00Z"),
    ]
    # The second batch brings an earlier first purchase day and one more purchase on a known day.
    earlier = [
        purchase(user_id, 20.0, "garden", timestamp="2026-02-20T08:00:00Z"),
        purchase(user_id, 3.1, "books", timestamp="2026-03-02T10:00:00Z"),
        {"user_id": user_id, "event_type": "page_view", "timestamp": "2026-03-03T10:00:00Z"},
    ]
    for batch in (later, earlier):
        assert client.post("/api/events/batch", json={"events": batch}).status_code == 202
    row = wait_for(lambda: (s := summary(user_id)) and s.purchases == 5 and s, what="5 purchases summarised")
    assert (row.first_day, row.last_day) == (date(2026, 2, 20), date(2026, 3, 9))
    assert row.purchase_days == 3  # 20 Feb, 2 Mar (three purchases), 9 Mar
    assert row.spent == Decimal("45.35") and row.first_day_spent == Decimal("20")
    assert row.first_purchase_at.isoformat() == "2026-02-20T08:00:00+00:00"
    assert row.last_purchase_at.isoformat() == "2026-03-09T12:00:00+00:00"
    assert categories(user_id) == {"books": (3, Decimal("20.35")), "toys": (1, Decimal("5")),
                                   "garden": (1, Decimal("20"))}
    assert drift(mongo, user_id) == NO_DRIFT

    # Re-sent in a new message with one new purchase: only the new one is added.
    marker = purchase(user_id, 1.0, "books", timestamp="2026-03-10T10:00:00Z")
    assert client.post("/api/events/batch", json={"events": later + earlier + [marker]}).status_code == 202
    row = wait_for(lambda: (s := summary(user_id)) and s.purchases == 6 and s, what="the new purchase summarised")
    assert (row.purchase_days, row.spent, row.first_day_spent) == (4, Decimal("46.35"), Decimal("20"))
    assert categories(user_id)["books"] == (4, Decimal("21.35"))
    assert drift(mongo, user_id) == NO_DRIFT

    # The profile reads the summary: BG/NBD's frequency counts repeat purchase days.
    profile = client.get(f"/api/users/{user_id}/profile").get_json()
    assert profile["totals"]["purchases"] == 6 and profile["totals"]["repeat_purchase_days"] == 3
    assert profile["totals"]["total_spent"] == 46.35
    assert profile["totals"]["last_purchase_at"] == "2026-03-10T10:00:00Z"


def test_check_reports_drift_and_rebuild_repairs_it(client, mongo, user_id):
    events = [purchase(user_id, 12.5, "music", timestamp="2026-01-05T10:00:00Z")]
    assert client.post("/api/events/batch", json={"events": events}).status_code == 202
    wait_for(lambda: summary(user_id), what="purchase summarised")
    with session_scope() as session:
        session.get(CustomerSummary, user_id).purchases = 7
    assert drift(mongo, user_id) == {**NO_DRIFT, "customer_summaries": 1}
    # The command a person runs says the same, and exits 1.
    found = cli("rebuild", "--check", "--user", str(user_id))
    assert found.returncode == 1, found.stderr
    assert "customer_summaries   DRIFT: 0 missing, 0 extra, 1 different" in found.stdout
    assert f"user_id={user_id}: stored (" in found.stdout
    repaired = cli("rebuild", "--user", str(user_id))
    assert repaired.returncode == 0 and "customer_summaries 1" in repaired.stdout
    assert summary(user_id).purchases == 1 and drift(mongo, user_id) == NO_DRIFT
    clean = cli("rebuild", "--check", "--user", str(user_id))
    assert clean.returncode == 0 and "no drift" in clean.stdout


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PULSE, "summaries", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_a_worker_killed_between_storing_and_counting_leaves_correct_summaries(client, mongo, user_id, killable):
    from shared.contracts.settings import Settings
    from shared.contracts.topology import STORE_EVENTS
    from shared.infra.celery_app import create_celery_app

    publisher = create_celery_app("pulse-test-kill", settings=Settings(queue_prefix=KillableWorker.prefix))
    events = [purchase(user_id, 30.0 + i, "sports", timestamp=f"2026-04-0{i + 1}T10:00:00+00:00") for i in range(3)]
    documents = [{**e, "geo": None} for e in events]
    batch_id = f"kill-{uuid.uuid4().hex}"
    worker = killable
    pg = make_url(TEST_ENV["DATABASE_URL"]).set(drivername="postgresql").render_as_string(hide_password=False)

    # The signup's own event is counted first, so the session's worker is not the one blocked below.
    def signup_counted():
        with psycopg.connect(pg, autocommit=True) as conn:
            return conn.execute("SELECT 1 FROM applied_batches a JOIN outbox o ON a.batch_id = o.id::text "
                                "WHERE (o.payload->>'user_id')::int = %s", (user_id,)).fetchone()

    wait_for(signup_counted, what="the signup counted")
    ids = [e["event_id"] for e in events]
    kill_between_storing_and_counting(
        worker, publisher, documents, batch_id,
        lambda: mongo.events.count_documents({"event_id": {"$in": ids}, "batch_id": batch_id}) == 3)
    assert summary(user_id) is None  # stored, never counted

    worker.start(publisher)  # the broker redelivers the unacknowledged message to the new worker
    row = wait_for(lambda: summary(user_id), timeout=90, what="the redelivered batch counted")
    assert (row.purchases, row.purchase_days, row.spent) == (3, 3, Decimal("93"))
    assert drift(mongo, user_id) == NO_DRIFT

    # The same message once more (a redelivery after the commit), then a marker behind it in the
    # same queue: one solo worker takes them in order, and the first adds nothing.
    publisher.send_task(STORE_EVENTS, kwargs={"events": documents}, task_id=batch_id)
    marker = {**purchase(user_id, 1.0, "sports", timestamp="2026-04-09T10:00:00+00:00"), "geo": None}
    publisher.send_task(STORE_EVENTS, kwargs={"events": [marker]})
    row = wait_for(lambda: (s := summary(user_id)) and s.purchases == 4 and s, timeout=60, what="marker counted")
    assert (row.purchase_days, row.spent) == (4, Decimal("94"))
    assert mongo.events.count_documents({"user_id": user_id, "event_type": "user_purchase"}) == 4
    assert drift(mongo, user_id) == NO_DRIFT


def test_the_ledger_forgets_batches_older_than_its_retention():
    from sqlalchemy import text

    old, recent = f"old-{uuid.uuid4().hex}", f"recent-{uuid.uuid4().hex}"
    with session_scope() as session:
        session.execute(text("INSERT INTO applied_batches (batch_id, events, applied_at) VALUES "
                             "(:old, 1, now() - interval '31 days'), (:recent, 1, now() - interval '29 days')"),
                        {"old": old, "recent": recent})
    with session_scope() as session:
        assert summaries.prune_ledger(session, 30) >= 1
    with session_scope() as session:
        left = set(session.scalars(text("SELECT batch_id FROM applied_batches WHERE batch_id IN (:old, :recent)"),
                                   {"old": old, "recent": recent}))
    assert left == {recent}
