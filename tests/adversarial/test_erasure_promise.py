"""Promise: erasure leaves nothing of the person, in any store Pulse writes, whatever went wrong on
the way: an erasure message that never did its work, a person deleted behind Pulse's back, an
error text quoting their address, a published signup message, Flower's task list.

Through the session's real pipeline (relay, worker, mailer, analytics as subprocesses); the
reconciliation is sent by name, as beat sends it (tests/adversarial/test_long_outage.py has beat
itself send it). Long outages: test_long_outage.py.
"""
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import select, text

from shared.contracts.tables import OutboxMessage, TaskFailure
from shared.contracts.topology import ERASE_USER, RECONCILE_ERASURES
from shared.infra.celery_app import create_celery_app
from shared.infra.db import session_scope
from shared.infra.dead_letters import DeadLetterQueue
from shared.pipeline import erasure
from tests.fixtures import ROOT, spawn, stop, wait_for
from tests.helpers import no_rescoring_pending, purchase, signup_body
from tests.integration.test_erasure import traces_in_mongodb, traces_in_postgres, traces_in_redis

pytestmark = pytest.mark.usefixtures("pipeline")


@pytest.fixture(scope="module")
def celery():
    app = create_celery_app("pulse-test-erasure-promise")
    yield app
    app.close()


def person_with_history(client, mongo, services, **overrides) -> dict:
    body = signup_body(**overrides)
    user_id = client.post("/api/users/signup", json=body).get_json()["id"]
    assert client.post("/api/events/batch", json={"events": [purchase(user_id, 30.0, "Books")]}).status_code == 202
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id}) == 2, what="the events stored")
    wait_for(lambda: mongo.welcome_emails.find_one({"_id": user_id}), what="the welcome record")
    wait_for(lambda: ((mongo.profiles.find_one({"_id": user_id}) or {}).get("totals") or {}).get("purchases") == 1,
             what="the stored profile")

    # A rescoring still to come would find the person erased and forget them itself (the
    # analytics worker forgets whoever it cannot find): the tests below erase with no such helper.
    wait_for(lambda: no_rescoring_pending(user_id), what="no rescoring pending for the person")
    wait_for(lambda: client.get(f"/api/users/{user_id}/profile").headers["X-Cache"] == "HIT", what="a cached profile")
    return {"id": user_id, "username": body["username"], "email": body["email"]}


def anything_left(mongo, person) -> list[str]:
    return traces_in_postgres(person) + traces_in_mongodb(mongo, person) + traces_in_redis(person)


def erase_losing_the_message(user_id: int) -> None:
    with session_scope() as session:
        assert erasure.erase_in_postgres(session, user_id)
        # The message is lost (purged from the dead letters, a broker that lost its disk): gone
        # before the relay saw it. And the second pass's window is long over.
        session.execute(OutboxMessage.__table__.delete().where(OutboxMessage.task_name == ERASE_USER,
                        OutboxMessage.payload["user_id"].astext == str(user_id)))
        session.execute(text("UPDATE erasures SET erased_at = now() - interval '1 hour' WHERE user_id = :id"),
                        {"id": user_id})


def test_an_erasure_whose_message_never_did_its_work_is_completed_by_the_reconciliation(client, mongo, services,
                                                                                          celery):
    person = person_with_history(client, mongo, services)
    erase_losing_the_message(person["id"])
    assert traces_in_mongodb(mongo, person)  # the worker never heard of it
    celery.send_task(RECONCILE_ERASURES)
    wait_for(lambda: not anything_left(mongo, person),
             what="the reconciliation to forget the person and close the erasure")


def test_a_lost_erasure_message_leaves_nothing_of_the_users_unmerged_visitor(client, mongo, services, celery):
    # The visitors' ids were named only by the lost message: the ledger row keeps them too.
    person = person_with_history(client, mongo, services)
    anon = f"anon-{uuid.uuid4().hex}"
    visit = {"event_id": uuid.uuid4().hex, "anonymous_id": anon, "event_type": "page_view", "metadata": {"page": "/"}}
    assert client.post("/api/events/batch", json={"events": [visit]}).status_code == 202
    wait_for(lambda: mongo.events.find_one({"anonymous_id": anon}), what="the visit stored")
    with session_scope() as session:  # linked as identify links, its merge not done yet
        visitor_id = int(session.scalar(text("UPDATE visitors SET user_id = :u, linked_at = now() "
                                             "WHERE anonymous_id = :a RETURNING id"), {"u": person["id"], "a": anon}))
    assert mongo.events.count_documents({"user_id": -visitor_id}) == 1
    erase_losing_the_message(person["id"])
    celery.send_task(RECONCILE_ERASURES)
    wait_for(lambda: not anything_left(mongo, person), what="the reconciliation to close the erasure")
    assert mongo.events.count_documents({"$or": [{"user_id": -visitor_id}, {"anonymous_id": anon}]}) == 0


def test_a_person_deleted_in_postgres_behind_pulses_back_is_forgotten_by_the_sweep(client, mongo, services, celery):
    person = person_with_history(client, mongo, services)
    bystander = person_with_history(client, mongo, services)
    with session_scope() as session:
        address = session.execute(text("DELETE FROM users WHERE id = :id RETURNING address_id"),
                                  {"id": person["id"]}).scalar()
        session.execute(text("DELETE FROM addresses WHERE id = :a"), {"a": address})
    celery.send_task(RECONCILE_ERASURES)
    wait_for(lambda: not anything_left(mongo, person),
             what="the sweep to forget the person in MongoDB, Redis, the outbox and task_failures")
    assert not anything_left(mongo, person)
    assert mongo.events.count_documents({"user_id": bystander["id"]}) == 2
    assert client.get(f"/api/users/{bystander['id']}/profile").status_code == 200


def test_a_refusal_quoting_the_address_is_recorded_without_it_and_erased_with_the_person(client, mongo, services):
    mail = services["mail"]
    body = signup_body()
    with mail.refuse(body["email"]):
        user_id = client.post("/api/users/signup", json=body).get_json()["id"]

        def failure() -> TaskFailure | None:
            with session_scope() as session:
                row = session.scalar(select(TaskFailure).where(TaskFailure.user_ids.any(user_id)))
                session.expunge_all()
                return row

        row = wait_for(failure, timeout=30, what="the refused welcome's failure recorded")
    assert row.first_error.startswith("SMTPRecipientsRefused") and "<address>" in row.first_error
    assert body["email"] not in row.first_error + row.last_error
    assert body["email"].split("@")[0] not in row.first_error + row.last_error
    assert client.delete(f"/api/users/{user_id}").status_code == 202
    assert failure() is None  # in the erasure's own transaction

    def purge() -> int:  # the refused welcome itself, documented as the operator's to purge
        with DeadLetterQueue() as dlq:
            return dlq.purge([row.task_id])

    wait_for(purge, timeout=30, what="the refused welcome dead-lettered, then purged")


def test_published_outbox_messages_are_pruned_after_the_retention(client, services):
    # A relay of its own with a retention of 3.6 s, beside the session's (relays share the work).
    relay = spawn([sys.executable, "-m", "services.api.outbox_relay"], "relay-retention",
                  {"OUTBOX_RETENTION_HOURS": "0.001"})
    try:
        body = signup_body()
        user_id = client.post("/api/users/signup", json=body).get_json()["id"]

        def published_for_the_user() -> int:
            with session_scope() as session:
                return session.scalar(text("SELECT count(*) FROM outbox WHERE payload ->> 'user_id' = :id "
                                           "AND published_at IS NOT NULL"), {"id": str(user_id)})

        wait_for(published_for_the_user, what="the signup's message published")
        wait_for(lambda: published_for_the_user() == 0, timeout=60, what="the published message pruned")
        with session_scope() as session:
            stale = session.scalar(
                text("SELECT count(*) FROM outbox WHERE published_at < now() - interval '30 seconds'"))
            texts = session.scalars(text("SELECT payload::text FROM outbox")).all()
        assert stale == 0
        assert not any(body["email"] in payload for payload in texts)
    finally:
        stop(relay)


@pytest.fixture()
def native_flower(tmp_path):
    """Flower as `make dev` starts it: the Procfile's own line, with no FLOWER_BASIC_AUTH set."""
    from tests.conftest import free_port

    procfile = (ROOT / "Procfile").read_text().splitlines()
    line = next(entry.split(":", 1)[1] for entry in procfile if entry.startswith("flower:"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    env.update({"PULSE_VAR_DIR": str(tmp_path), "FLOWER_PORT": str(port)})
    log = open(tmp_path / "flower.log", "wb")
    process = subprocess.Popen(["sh", "-c", line], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/healthcheck", timeout=2).status_code == 200, timeout=60,
                 what="Flower to answer")
        yield url, tmp_path / "flower-login"
    finally:
        stop(process)
        log.close()


def test_flower_natively_asks_for_a_login_and_shows_no_personal_arguments(client, native_flower):
    url, login_file = native_flower
    assert requests.get(f"{url}/", timeout=10).status_code == 401
    assert requests.get(f"{url}/api/tasks", timeout=10).status_code == 401
    assert requests.get(f"{url}/api/tasks", auth=("pulse", "pulse"), timeout=10).status_code == 401
    assert oct(login_file.stat().st_mode & 0o777) == "0o600"
    user, _, password = login_file.read_text().strip().partition(":")
    assert user == "pulse" and len(password) >= 16
    assert requests.get(f"{url}/", auth=(user, password), timeout=10).status_code == 200

    body = signup_body(full_name=f"Flower Watcher {uuid.uuid4().hex[:6]}")
    user_id = client.post("/api/users/signup", json=body).get_json()["id"]
    events = [purchase(user_id, 12.0, "Books", timestamp=datetime.now(UTC).isoformat())]
    assert client.post("/api/events/batch", json={"events": events}).status_code == 202

    def seen() -> dict:
        tasks = requests.get(f"{url}/api/tasks", auth=(user, password), timeout=10).json()
        mine = {t["name"]: t for t in tasks.values() if f"'user_id': {user_id}" in (t.get("kwargs") or "")}
        batches = [t for t in tasks.values() if t["name"] == "pulse.worker.store_events"]
        return {**mine, "batches": batches} if "pulse.worker.user_created" in mine and batches else {}

    tasks = wait_for(seen, timeout=60, what="Flower to show the signup's tasks")
    shown = json.dumps(requests.get(f"{url}/api/tasks", auth=(user, password), timeout=10).json())
    for personal in (body["email"], body["full_name"], body["username"], body["address"]["street"],
                     events[0]["event_id"]):
        assert personal not in shown
    assert "'email': '<hidden>'" in tasks["pulse.worker.user_created"]["kwargs"]
    assert all("items>" in batch["kwargs"] for batch in tasks["batches"])
