"""Dead letters you can work with: listed with task, queue, reason, age and first error; replayed
into the queue they died in once the cause is fixed; purged. Bad input never gets that far.

Through the real pipeline: the session's worker consumes, fails, and RabbitMQ dead-letters; the
command runs as a user would run it (`pulse dead-letters`, a subprocess).
"""
import json
import subprocess
import uuid

import pytest
from sqlalchemy import select

from shared.contracts.tables import OutboxMessage, TaskFailure
from shared.contracts.topology import SEND_WELCOME, STORE_EVENTS, USER_CREATED
from shared.infra import task_failures
from shared.infra.celery_app import create_celery_app
from shared.infra.db import session_scope
from tests.fixtures import PULSE, ROOT, wait_for
from tests.helpers import finished_job, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


def dead_letters(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PULSE, "dead-letters", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def listed() -> dict[str, dict]:
    result = dead_letters("list", "--json")
    assert result.returncode == 0, result.stderr
    return {letter["task_id"]: letter for letter in json.loads(result.stdout)}


def test_a_dead_letter_is_listed_with_its_error_and_replayed_once_the_cause_is_fixed(client, services):
    mail = services["mail"]
    body = signup_body()
    with mail.refuse(body["email"]):
        # The mail server refuses the recipient for good (550): not transient, so the welcome
        # task fails at once and RabbitMQ dead-letters it; the signup itself is unaffected.
        signed_up = client.post("/api/users/signup", json=body)
        assert signed_up.status_code == 201
        with session_scope() as session:
            # The welcome's task id is the signup's outbox id with `.welcome` (services.worker.tasks).
            outbox_id = session.scalar(select(OutboxMessage.id).where(
                OutboxMessage.payload["user_id"].astext == str(signed_up.get_json()["id"])))

        def refused():
            return listed().get(f"{outbox_id}.welcome")

        letter = wait_for(refused, timeout=30, what="the refused welcome in the dead-letter queue")
        assert letter["task"] == SEND_WELCOME
        assert letter["queue"] == "pulse.email" and letter["reason"] == "rejected"
        assert letter["attempts"] == 1 and letter["first_error"].startswith("SMTPRecipientsRefused")
        # The refusal quotes the address; the recorded error does not (shared.infra.task_failures).
        assert body["email"] not in letter["first_error"] and "<address>" in letter["first_error"]
        assert 0 <= letter["age_seconds"] < 60 and letter["deaths"] == 1
        table = dead_letters("list")
        assert letter["task_id"] in table.stdout and "SMTPRecipientsRefused" in table.stdout
        assert letter["task_id"] in listed()  # listing gave every message back
        assert not mail.to(body["email"])

    # The server accepts the address again: replay the one message.
    replay = dead_letters("replay", letter["task_id"])
    assert replay.returncode == 0 and letter["task_id"] in replay.stdout
    wait_for(lambda: mail.to(body["email"]), timeout=30, what="the replayed welcome e-mail")
    assert len(mail.to(body["email"])) == 1
    assert letter["task_id"] not in listed()
    assert task_failures.load([letter["task_id"]]) == {}  # its record went with it


def test_purge_removes_only_the_named_dead_letter_and_refuses_unknown_ids():
    app = create_celery_app("pulse-test-dead-letters")
    poison, other = f"poison-{uuid.uuid4()}", f"poison-{uuid.uuid4()}"
    for task_id in (poison, other):
        # Fails validation in the worker: not transient, no retry.
        app.send_task(USER_CREATED, kwargs={"user_id": "not-a-number"}, task_id=task_id)
    wait_for(lambda: {poison, other} <= set(listed()), timeout=30, what="both poison messages dead-lettered")
    assert "ValidationError" in listed()[poison]["first_error"]

    purged = dead_letters("purge", poison)
    assert purged.returncode == 0 and "purged 1" in purged.stdout
    remaining = listed()
    assert poison not in remaining and other in remaining

    missing = dead_letters("replay", f"no-such-{uuid.uuid4()}")
    assert missing.returncode == 1 and "not in the dead-letter queue" in missing.stderr
    assert other in listed()
    assert dead_letters("purge").returncode == 2  # neither ids nor --all: a usage error
    dead_letters("purge", other)


def test_a_store_events_message_not_of_the_contract_fails_for_good_with_its_error(mongo):
    """The worker validates a store-events message (shared.contracts.schemas.StoreEventsMessage):
    one it cannot read is not retried but recorded and dead-lettered, where it can be seen, and
    nothing of it is stored."""
    app = create_celery_app("pulse-test-dead-letters")
    batch_id = f"poison-events-{uuid.uuid4()}"
    event = {"event_id": f"e-{uuid.uuid4().hex}", "user_id": 1, "event_type": "login", "timestamp": 1_700_000_000}
    app.send_task(STORE_EVENTS, kwargs={"events": [event]}, task_id=batch_id)
    wait_for(lambda: batch_id in listed(), timeout=30, what="the unreadable batch dead-lettered")
    letter = listed()[batch_id]
    assert "ValidationError" in letter["first_error"] and "timestamp" in letter["first_error"]
    assert batch_id in task_failures.load([batch_id])
    assert mongo.events.count_documents({"event_id": event["event_id"]}) == 0
    dead_letters("purge", batch_id)


def test_refused_input_is_never_queued_so_it_never_dead_letters(client):
    before = set(listed())
    bad_event = client.post("/api/events",
                            json={"user_id": 1, "event_type": "user_purchase", "metadata": {"price": 1e192}})
    assert bad_event.status_code == 422
    # A fit with no customers to fit is a job that fails with its reason: an answer, not a task
    # failure, so nothing is retried or dead-lettered.
    fit = finished_job(client, client.post("/api/analytics/models/fit", json={"as_of": "1990-01-01"}))
    assert fit["status"] == "failed" and fit["error"]["field"] == "as_of"
    assert set(listed()) == before
    with session_scope() as session:
        recent = session.scalars(select(TaskFailure.task_name)).all()
    assert "pulse.analytics.fit_models" not in recent
