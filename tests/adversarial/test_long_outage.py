"""Promise: an erasure cannot be lost, and a batch answered 202 is stored, once, however long a
store is down; nothing either was told is kept ends in the dead-letter queue.

Attacked on a stack of the test's own (scripts.chaos.ChaosStack: private Postgres, RabbitMQ,
Redis, SecantusDB and mail catcher; the API, relay, workers and beat as processes), with the
old retry budget shortened through settings (TASK_MAX_RETRIES=2, backoff capped at 1 s: about
3 s of retries) and outages many times that long: before this promise, the erasure and the
batches would have been dead-lettered a few seconds into the outage, and the person's events,
profile and welcome record kept for good.
"""
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
import redis as redis_lib
import requests
from sqlalchemy import create_engine, text

from services.api.shared_reads import READ_INTERVAL_SECONDS
from shared.infra.dead_letters import DeadLetterQueue
from shared.infra.mongo import SERVER_SELECTION_TIMEOUT_SECONDS
from tests.fixtures import wait_for
from tests.helpers import chaos_stack, signup_body, stack_database

pytestmark = pytest.mark.timeout(900)

OLD_MAX_RETRIES = 2
# Beat's erasure reconciliation, every so many seconds: short, so that the last test's sweep comes
# soon, but longer than a worker's turn during the MongoDB outage. The worker (one slot) takes
# pulse.users and pulse.events in turn, and each try of the retrying batch holds the slot for the
# whole server-selection timeout: beat sending runs faster than that would pile them up in
# pulse.users without bound (RabbitMQ has no way to drop a stale one but to dead-letter it), in
# front of the erasure's retry, which then waits longer at each try. Production's period is 60 s.
RECONCILE_SECONDS = 4 * SERVER_SELECTION_TIMEOUT_SECONDS


@pytest.fixture(scope="module")
def stack():
    with chaos_stack({
        "TASK_MAX_RETRIES": str(OLD_MAX_RETRIES),
        "TASK_RETRY_BACKOFF_MAX_SECONDS": "1",
        "ERASURE_RECONCILE_SECONDS": str(RECONCILE_SECONDS),
        "OUTBOX_RETENTION_HOURS": "0.002",  # 7.2 s
    }) as chaos:
        yield chaos


@pytest.fixture(scope="module")
def db(stack):
    with stack_database(stack) as database:
        yield database


@pytest.fixture(scope="module")
def pg(stack):
    engine = create_engine(stack.env["DATABASE_URL"])
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def cache(stack):
    client = redis_lib.Redis.from_url(stack.env["REDIS_URL"])
    yield client
    client.close()


def api(stack, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{stack.api}{path}", headers=stack.headers, timeout=30, **kwargs)


def purchase(user_id: int, price: float = 25.0) -> dict:
    return {"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "user_purchase",
            "timestamp": datetime.now(UTC).isoformat(),
            "metadata": {"product_id": "P-1", "price": price, "category": "Books"}}


def person_with_history(stack, db) -> dict:
    body = signup_body(full_name=f"Outage Person {uuid.uuid4().hex[:6]}")
    created = api(stack, "POST", "/api/users/signup", json=body)
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    assert api(stack, "POST", "/api/events/batch",
               json={"events": [purchase(user_id), purchase(user_id)]}).status_code == 202
    wait_for(lambda: ((db.profiles.find_one({"_id": user_id}) or {}).get("totals") or {}).get("purchases") == 2,
             timeout=90, what="the person's profile with both purchases")
    wait_for(lambda: db.welcome_emails.find_one({"_id": user_id}), timeout=60, what="the welcome record")
    wait_for(lambda: api(stack, "GET", f"/api/users/{user_id}/profile").headers.get("X-Cache") == "HIT", timeout=30,
             what="a cached profile")
    return {"id": user_id, "email": body["email"], "username": body["username"], "full_name": body["full_name"]}


def traces(person: dict, db, pg, cache, stack) -> list[str]:
    """Everything any store still holds of the person: by id, e-mail, username or name."""
    marks = (person["email"], person["username"], person["full_name"])
    found = []
    for name in db.list_collection_names():
        if db[name].count_documents({"$or": [{"user_id": person["id"]}, {"_id": person["id"]}]}):
            found.append(f"mongodb {name}: documents of the id")
        for doc in db[name].find({}, {"_id": 0}):
            flat = json.dumps(doc, default=str)
            if any(mark in flat for mark in marks):
                found.append(f"mongodb {name}: {flat[:120]}")
    prefix = stack.env["CACHE_PREFIX"]
    for raw in cache.scan_iter(match=prefix + "*", count=1000):
        name = raw.decode()
        if str(person["id"]) in name.split(":"):
            found.append(f"redis key {name}")
        elif cache.type(raw) == b"string" and any(mark in (cache.get(raw) or b"").decode(errors="replace")
                                                  for mark in marks):
            found.append(f"redis {name}")
    with pg.connect() as conn:
        failures = conn.execute(text("SELECT task_id, last_error, first_error, user_ids FROM task_failures")).all()
        found += [f"task_failures {row.task_id}" for row in failures
                  if person["id"] in (row.user_ids or []) or any(m in row.first_error + row.last_error for m in marks)]
        outbox = conn.execute(text("SELECT id, payload::text AS payload FROM outbox")).all()
        found += [f"outbox {row.id}" for row in outbox
                  if json.loads(row.payload).get("user_id") == person["id"] or any(m in row.payload for m in marks)]
        for table in ("users", "erasures"):
            column = "id" if table == "users" else "user_id"
            if conn.execute(text(f"SELECT count(*) FROM {table} WHERE {column} = :id"), {"id": person["id"]}).scalar():
                found.append(f"postgres {table}")
    return found


def pipeline(stack) -> dict:
    return api(stack, "GET", "/api/pipeline").json()


PROMISED = {"pulse.worker.store_events", "pulse.worker.erase_user", "pulse.worker.user_created"}


def dead_letters(stack) -> list[str]:
    """Dead letters of the tasks that retry until done. (A recomputation such as the dashboard's
    customer statistics still gives up after TASK_MAX_RETRIES: beat sends it again anyway.)"""
    with DeadLetterQueue(broker_url=stack.rabbit.url, prefix="pulse") as dlq:
        return [f"{letter.task} {letter.task_id}" for letter in dlq.letters() if letter.task in PROMISED]


def most_attempts(pg, task: str) -> int:
    with pg.connect() as conn:
        return conn.execute(text("SELECT coalesce(max(attempts), 0) FROM task_failures "
                                 "WHERE task_name = :t AND retrying"),
                            {"t": task}).scalar()


def test_an_erasure_during_a_long_mongodb_outage_leaves_nothing_of_the_person_once_it_is_back(stack, db, pg, cache):
    person = person_with_history(stack, db)
    bystander = person_with_history(stack, db)
    assert traces(person, db, pg, cache, stack)

    stack.mongo.stop()
    try:
        # A careless client keeps sending the person's events while the erasure is on its way.
        assert api(stack, "POST", "/api/events/batch", json={"events": [purchase(person["id"])]}).status_code == 202
        erased = api(stack, "DELETE", f"/api/users/{person['id']}")
        assert erased.status_code == 202, erased.text
        wait_for(lambda: (pipeline(stack)["retry_backlog"] or {}).get("erasures", 0) >= 1, timeout=60,
                 what="the erasure in the retry backlog")
        # /metrics reads each store at most once a second per API process (services.api.shared_reads):
        # the figure may lag the pipeline's by that much, on whichever process answers, and a read
        # during the outage may spend MongoDB's server-selection timeout first.
        wait_for(lambda: 'pulse_task_retry_backlog{task="pulse.worker.erase_user"} 1.0'
                 in requests.get(f"{stack.api}/metrics", timeout=30).text,
                 timeout=6 * (READ_INTERVAL_SECONDS + SERVER_SELECTION_TIMEOUT_SECONDS),
                 what="the erasure in the metric pulse_task_retry_backlog")
        # The outage lasts until the erasure has been tried more often than the old budget allowed
        # (it used to be dead-lettered after OLD_MAX_RETRIES retries).
        wait_for(lambda: most_attempts(pg, "pulse.worker.erase_user") > OLD_MAX_RETRIES + 2, timeout=240,
                 interval=1, what="the erasure retried past the old budget")
        assert dead_letters(stack) == []
    finally:
        stack.mongo.start()

    wait_for(lambda: not traces(person, db, pg, cache, stack), timeout=120,
             what="nothing of the person left in MongoDB, Redis, task_failures, the outbox or Postgres")
    wait_for(lambda: pipeline(stack)["retry_backlog"]["erasures"] == 0, timeout=60, what="the backlog emptied")
    assert dead_letters(stack) == []
    assert db.events.count_documents({"user_id": bystander["id"]}) == 3  # signup + two purchases
    assert api(stack, "GET", f"/api/users/{person['id']}/profile").status_code == 404


def test_batches_answered_202_during_a_long_outage_are_all_stored_once_and_none_dead_lettered(stack, db, pg):
    created = api(stack, "POST", "/api/users/signup", json=signup_body())
    users = [created.json()["id"]]
    created = api(stack, "POST", "/api/users/signup", json=signup_body())
    users.append(created.json()["id"])
    wait_for(lambda: db.events.count_documents({"user_id": {"$in": users}}) == 2, timeout=60, what="both signups")

    stack.mongo.stop()
    sent = []
    try:
        batches = [[purchase(users[(batch + i) % 2], price=10.0 + i) for i in range(20)] for batch in range(6)]
        # A careless client: it heard nothing back for the first batch and sends it again.
        for events in (*batches, batches[0]):
            answer = api(stack, "POST", "/api/events/batch", json={"events": events})
            assert answer.status_code == 202, answer.text
            sent += [e["event_id"] for e in events]
        wait_for(lambda: (pipeline(stack)["retry_backlog"] or {}).get("events", 0) >= 1, timeout=60,
                 what="the batches in the retry backlog")
        wait_for(lambda: most_attempts(pg, "pulse.worker.store_events") > OLD_MAX_RETRIES + 1, timeout=240,
                 interval=1, what="a batch retried past the old budget")
        # RabbitMQ goes too, in the middle of it: the retries it holds must come back, not die.
        stack.rabbit.stop()
        time.sleep(3)  # the broker's own outage
        stack.rabbit.start()
        attempts = most_attempts(pg, "pulse.worker.store_events")
        wait_for(lambda: most_attempts(pg, "pulse.worker.store_events") > attempts + 1, timeout=240, interval=1,
                 what="the batches retrying again after the broker came back")
        assert dead_letters(stack) == []
    finally:
        stack.mongo.start()

    unique = set(sent)
    wait_for(lambda: db.events.count_documents({"event_id": {"$in": list(unique)}}) == len(unique), timeout=180,
             what="every event answered 202 stored")
    stored = list(db.events.aggregate([{"$match": {"event_id": {"$in": list(unique)}}},
                                       {"$group": {"_id": "$event_id", "n": {"$sum": 1}}}]))
    assert len(stored) == len(unique) and all(doc["n"] == 1 for doc in stored)
    wait_for(lambda: pipeline(stack)["retry_backlog"]["events"] == 0, timeout=60, what="the backlog emptied")
    assert dead_letters(stack) == []
    # Counted once too: the summaries hold exactly the purchases stored.
    with pg.connect() as conn:
        purchases = conn.execute(text("SELECT coalesce(sum(purchases), 0) FROM customer_summaries "
                                      "WHERE user_id = ANY(:u)"),
                                 {"u": users}).scalar()
    assert purchases == len(unique)


def test_a_user_deleted_in_postgres_behind_pulses_back_is_forgotten_by_beats_reconciliation(stack, db, pg, cache):
    person = person_with_history(stack, db)
    with pg.begin() as conn:
        # An operator's hand, not the API: no erasure message, no `erasures` row.
        address = conn.execute(text("DELETE FROM users WHERE id = :id RETURNING address_id"),
                               {"id": person["id"]}).scalar()
        conn.execute(text("DELETE FROM addresses WHERE id = :a"), {"a": address})
    wait_for(lambda: not traces(person, db, pg, cache, stack), timeout=60 + 3 * RECONCILE_SECONDS,
             what="beat's sweep to forget the person in MongoDB, Redis, task_failures and the outbox")
