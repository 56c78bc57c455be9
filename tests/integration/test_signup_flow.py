"""Signup end to end through the real pipeline: Postgres → outbox → RabbitMQ → worker → MongoDB."""
import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.models import OutboxMessage
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
