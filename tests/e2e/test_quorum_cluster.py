"""Quorum queues on a real three-node RabbitMQ cluster of the test's own (separate node names and
ports on this machine): ingestion goes on while the node that the clients and the worker are
connected to, and that leads the queues, is stopped; every event is stored and counted once."""
import uuid
from datetime import UTC, datetime

import pytest

from scripts.private_servers import RabbitCluster
from shared.contracts.settings import Settings
from shared.contracts.topology import STORE_EVENTS
from shared.infra.celery_app import create_celery_app
from shared.infra.db import session_scope
from shared.pipeline import summaries
from shared.pipeline.activity import load as load_activity
from tests.conftest import RUN_ID, TEST_ENV
from tests.fixtures import celery_worker_args, spawn, stop, wait_for
from tests.helpers import signup_body

BATCHES, PER_BATCH = 40, 25


@pytest.fixture(scope="module")
def cluster():
    nodes = RabbitCluster(3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.remove()


@pytest.mark.timeout(600)
def test_ingestion_on_quorum_queues_survives_losing_a_node(cluster, client, mongo):
    prefix = f"pulseq{RUN_ID}"
    env = {"BROKER_URL": cluster.url, "QUEUE_TYPE": "quorum", "QUEUE_PREFIX": prefix}
    settings = Settings(**{**{k.lower(): v for k, v in TEST_ENV.items()}, "broker_url": cluster.url,
                           "queue_type": "quorum", "queue_prefix": prefix})
    user_id = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
    worker = spawn(celery_worker_args("services.worker.main", f"{prefix}.users,{prefix}.events", f"quorum-{RUN_ID}"),
                   "quorum-worker", env)
    app = create_celery_app("pulse-test-quorum", settings=settings)
    try:
        wait_for(lambda: len(app.control.ping(timeout=1.0)) >= 1, timeout=90, what="the worker on the cluster")
        queues = cluster.nodes[1].ctl("list_queues", "name", "type", "leader")
        assert f"{prefix}.events\tquorum" in queues, queues

        event_ids = []

        def send(batch: int) -> None:
            events = [{"event_id": f"q{batch}-{i}-{uuid.uuid4().hex[:8]}", "user_id": user_id,
                       "event_type": "page_view",
                       "timestamp": datetime.now(UTC).isoformat(), "metadata": {"n": i}, "geo": None}
                      for i in range(PER_BATCH)]
            event_ids.extend(e["event_id"] for e in events)
            app.send_task(STORE_EVENTS, kwargs={"events": events}, task_id=f"quorum-{RUN_ID}-{batch}")

        for batch in range(BATCHES // 2):
            send(batch)
        cluster.nodes[0].stop()  # the first host of every client's URL, where the queues were declared
        for batch in range(BATCHES // 2, BATCHES):
            send(batch)

        wait_for(lambda: mongo.events.count_documents({"event_id": {"$in": event_ids}}) == BATCHES * PER_BATCH,
                 timeout=180, what="every event stored after the node went away")

        def counted():
            with session_scope() as session:
                return load_activity(session, [user_id], datetime.now(UTC))[user_id].events

        # user_created is not among them: this user's signup went through the session's vhost.
        wait_for(lambda: counted() >= BATCHES * PER_BATCH, timeout=60, what="every event counted")
        assert counted() - BATCHES * PER_BATCH in (0, 1)
        with session_scope() as session:
            assert all(drift.rows == 0 for drift in summaries.check(mongo, session, [user_id]))
            session.rollback()
        status = cluster.nodes[1].ctl("list_queues", "name", "type", "members", "online")
        assert f"{prefix}.events\tquorum" in status
    finally:
        app.close()
        stop(worker)
