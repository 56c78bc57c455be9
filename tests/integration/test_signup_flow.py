"""Signup end to end through the real pipeline: Postgres → outbox → RabbitMQ → worker → MongoDB."""
import uuid

import pytest
from sqlalchemy import select

from shared.contracts.tables import OutboxMessage
from shared.infra.db import session_scope
from tests.fixtures import wait_for
from tests.helpers import signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


def test_signup_reaches_mongodb_and_mail(client, mongo, services):
    body = signup_body()
    response = client.post("/api/users/signup", json=body)
    assert response.status_code == 201, response.get_json()
    user_id = response.get_json()["id"]

    profile = wait_for(lambda: mongo.profiles.find_one({"user_id": user_id, "segment": {"$ne": None}}), what="profile")
    assert profile["username"] == body["username"]
    assert profile["city"] == "Kyiv" and profile["country_code"] == "UA"
    event = mongo.events.find_one({"user_id": user_id, "event_type": "user_created"})
    assert event is not None
    mails = wait_for(lambda: services["mail"].to(body["email"]), what="welcome e-mail")
    assert "Welcome to Pulse, Ivan Ivanov" in mails[0]["Subject"]
    with session_scope() as session:
        outbox = session.scalar(select(OutboxMessage).where(OutboxMessage.payload["user_id"].as_integer() == user_id))
        assert outbox.published_at is not None
        assert event["event_id"] == str(outbox.id)


def test_a_slow_mail_server_holds_up_no_profile(client, mongo, services):
    """The welcome e-mail has its own queue and worker: while the SMTP server does not answer,
    signups still get their profiles; the e-mails follow once it answers."""
    mail = services["mail"]
    bodies = [signup_body() for _ in range(3)]
    with mail.hold():
        ids = [client.post("/api/users/signup", json=body).get_json()["id"] for body in bodies]
        wait_for(lambda: mongo.profiles.count_documents({"user_id": {"$in": ids}, "segment": {"$ne": None}}) == 3,
                 timeout=8, what="profiles while the mail server hangs")
        assert not any(mail.to(body["email"]) for body in bodies)
    wait_for(lambda: all(mail.to(body["email"]) for body in bodies), what="the e-mails once it answers")


def test_a_message_that_can_never_succeed_is_dead_lettered(mongo):
    from kombu import Connection

    from shared.contracts.topology import USER_CREATED
    from shared.infra.celery_app import create_celery_app

    app = create_celery_app("pulse-test-dlq")

    def depth():
        with Connection(app.conf.broker_url) as conn:
            return conn.default_channel.queue_declare("pulse.dead_letter", passive=True).message_count

    before = depth()
    # Fails validation in the worker: not transient, so no retry; rejected, then dead-lettered.
    app.send_task(USER_CREATED, kwargs={"user_id": "not-a-number"}, task_id=f"poison-{uuid.uuid4()}")
    wait_for(lambda: depth() == before + 1, what="the poison message in pulse.dead_letter")


def test_one_request_id_from_the_answer_to_the_welcome_email(client, mongo, services):
    body = signup_body()
    request_id = f"signup-{uuid.uuid4().hex[:12]}"
    response = client.post("/api/users/signup", json=body, headers={"X-Request-ID": request_id})
    assert response.status_code == 201 and response.headers["X-Request-ID"] == request_id
    user_id = response.get_json()["id"]
    with session_scope() as session:
        outbox = session.scalar(select(OutboxMessage).where(OutboxMessage.payload["user_id"].as_integer() == user_id))
        assert outbox.request_id == request_id
    mails = wait_for(lambda: services["mail"].to(body["email"]), what="welcome e-mail")
    assert mails[0]["X-Request-ID"] == request_id

    # Made when the client sends none (or an unusable one), and named in problem bodies.
    made = client.post("/api/users/signup", json={**body, "email": "not-an-email"},
                       headers={"X-Request-ID": "bad id with spaces"})
    assert made.status_code == 422
    assert made.headers["X-Request-ID"] != "bad id with spaces"
    assert made.get_json()["request_id"] == made.headers["X-Request-ID"]
