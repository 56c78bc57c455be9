"""No lost signups: the outbox under a broker outage, competing relays and redelivery.

The outage is real: the test starts its own RabbitMQ node on another port and stops it.
"""
import shutil
import sys

import pytest
import requests
from kombu import Connection
from pymongo import MongoClient
from sqlalchemy import select, update

from scripts.private_servers import ApiServer, PrivateRabbit
from shared.contracts.tables import OutboxMessage
from shared.infra import api_keys
from shared.infra.db import session_scope
from tests.conftest import TEST_ENV
from tests.fixtures import celery_worker_args, spawn, stop, wait_for
from tests.helpers import signup_body


def queue_depth(rabbit: PrivateRabbit, name: str) -> int:
    with Connection(rabbit.url) as conn:
        return conn.default_channel.queue_declare(name, passive=True).message_count


@pytest.fixture()
def rabbit():
    if shutil.which("rabbitmq-server") is None:
        pytest.skip("rabbitmq-server is not installed: the outage test needs its own broker node")
    broker = PrivateRabbit()
    broker.start()
    yield broker
    broker.remove()


@pytest.fixture()
def isolated_api(rabbit, services):
    """An API process with its own database, publishing to the extra broker: the session's relay
    (which serves the main test database) cannot touch these outbox rows."""
    from shared.infra.db import drop_database
    from shared.infra.migrate import upgrade

    db_url = f"{TEST_ENV['DATABASE_URL']}_f{rabbit.port}"
    upgrade(db_url)
    with session_scope(db_url) as session:  # its own key: the session's lives in another database
        _, key = api_keys.create(session, list(api_keys.SCOPES), name="outbox-faults")
    mongo_uri = f"{TEST_ENV['MONGO_URI']}_f{rabbit.port}"  # user ids restart in this database
    # Its own Redis prefix too: its users (ids of another database) must not join the session's
    # rescoring, nor its drain requests (on a broker no analytics worker reads) hold up the session's.
    env = {"DATABASE_URL": db_url, "BROKER_URL": rabbit.url, "MONGO_URI": mongo_uri,
           "CACHE_PREFIX": f"{TEST_ENV['CACHE_PREFIX']}f{rabbit.port}:"}
    api = ApiServer(env, name="isolated-api").start()
    base = api.url
    mongo = MongoClient(mongo_uri, tz_aware=True).get_default_database()
    try:
        yield {"url": base, "env": env, "db": db_url, "mongo": mongo, "headers": {"Authorization": f"Bearer {key}"}}
    finally:
        api.remove()
        mongo.client.drop_database(mongo.name)
        mongo.client.close()
        drop_database(db_url)


def signup(api: dict, body: dict) -> int:
    response = requests.post(f"{api['url']}/api/users/signup", json=body, headers=api["headers"], timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def outbox_row(user_id: int, db_url: str | None = None) -> OutboxMessage:
    with session_scope(db_url) as session:
        return session.scalar(select(OutboxMessage).where(OutboxMessage.payload["user_id"].as_integer() == user_id))


def test_signup_while_broker_is_down_is_delivered_when_it_returns(isolated_api, rabbit, services):
    env, db, mongo = isolated_api["env"], isolated_api["db"], isolated_api["mongo"]
    relay = spawn([sys.executable, "-m", "services.api.outbox_relay"], "outage-relay", env)
    worker = spawn(celery_worker_args("services.worker.main", "pulse.users,pulse.events,pulse.email",
                                      f"outage-{rabbit.port}"),
                   "outage-worker", env)
    try:
        rabbit.stop()
        body = signup_body()
        user_id = signup(isolated_api, body)
        wait_for(lambda: outbox_row(user_id, db).attempts >= 1, timeout=60, what="the relay to fail publishing")
        assert outbox_row(user_id, db).published_at is None

        rabbit.start()
        wait_for(lambda: outbox_row(user_id, db).published_at is not None, timeout=90,
                 what="publish after the broker returned")
        wait_for(lambda: mongo.profiles.find_one({"user_id": user_id}), timeout=90, what="profile after the outage")
        wait_for(lambda: services["mail"].to(body["email"]), timeout=60, what="welcome e-mail after the outage")
        assert mongo.events.count_documents({"user_id": user_id, "event_type": "user_created"}) == 1
    finally:
        stop(relay)
        stop(worker)


def test_two_relays_never_publish_the_same_row(isolated_api, rabbit):
    # No consumer on this broker: the queue depth counts exactly what the relays published.
    from shared.infra.celery_app import create_celery_app

    with Connection(rabbit.url) as conn:
        for queue in create_celery_app("declare").amqp.queues.values():
            queue.bind(conn.default_channel).declare()
    db = isolated_api["db"]
    ids = [signup(isolated_api, signup_body()) for _ in range(40)]
    env = {**isolated_api["env"], "OUTBOX_BATCH_SIZE": "5"}
    relays = [spawn([sys.executable, "-m", "services.api.outbox_relay"], f"twin-relay-{i}", env) for i in range(2)]
    try:
        wait_for(lambda: all(outbox_row(i, db).published_at for i in ids), timeout=90, what="all 40 rows published")
        with session_scope(db) as session:
            pending = session.scalars(select(OutboxMessage.id).where(OutboxMessage.published_at.is_(None))).all()
        assert pending == []
    finally:
        for relay in relays:
            stop(relay)
    # Every row is marked published and the relays are stopped, so the queue holds all there
    # will ever be: exactly one message per row.
    assert queue_depth(rabbit, "pulse.users") == len(ids)
    # ... and each message carries its outbox id as message id and task id, persistently.
    with session_scope(db) as session:
        outbox_ids = {str(row_id) for row_id in session.scalars(select(OutboxMessage.id))}
    with Connection(rabbit.url) as conn:
        messages = [conn.default_channel.basic_get("pulse.users") for _ in ids]
    assert {m.properties["message_id"] for m in messages} == outbox_ids
    assert all(m.headers["id"] == m.properties["message_id"] for m in messages)
    assert {m.properties["delivery_mode"] for m in messages} == {2}


@pytest.mark.usefixtures("pipeline")
def test_redelivered_user_created_changes_nothing(client, mongo, services):
    body = signup_body()
    user_id = client.post("/api/users/signup", json=body).get_json()["id"]
    wait_for(lambda: outbox_row(user_id).published_at, what="row published first")
    wait_for(lambda: services["mail"].to(body["email"]), what="first welcome")
    wait_for(lambda: outbox_row(user_id).published_at, what="row published")
    # Simulate a relay that crashed after RabbitMQ confirmed but before its commit: publish again.
    with session_scope() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.id == outbox_row(user_id).id)
                        .values(published_at=None))
    wait_for(lambda: outbox_row(user_id).published_at, what="row republished")
    marker = signup_body()
    client.post("/api/users/signup", json=marker)
    wait_for(lambda: services["mail"].to(marker["email"]), what="a later signup processed")
    assert mongo.events.count_documents({"user_id": user_id, "event_type": "user_created"}) == 1
    assert mongo.profiles.count_documents({"user_id": user_id}) == 1
    assert len(services["mail"].to(body["email"])) == 1
