"""Small builders and harness pieces shared by integration, adversarial and end-to-end tests."""
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from shared.infra.db import get_engine, session_scope
from tests.conftest import RUN_ID, TEST_ENV, free_port
from tests.fixtures import spawn, stop, wait_for


def signup_body(city: str = "Kyiv", country: str = "UA", **overrides) -> dict:
    suffix = uuid.uuid4().hex[:10]
    body = {
        "username": f"user_{suffix}",
        "email": f"user.{suffix}@example.com",
        "full_name": "Ivan Ivanov",
        "address": {"street": "Khreschatyk Street", "city": city, "country_code": country},
    }
    body.update(overrides)
    return body


def purchase(user_id: int, price: float, category: str, **extra) -> dict:
    return {
        "event_id": extra.pop("event_id", uuid.uuid4().hex),
        "user_id": user_id,
        "event_type": "user_purchase",
        "metadata": {"product_id": f"P-{category}", "price": price, "category": category},
        **extra,
    }


@contextmanager
def count_statements():
    """Counts the SQL statements the engine executes inside the block."""
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def no_rescoring_pending(user_id: int) -> bool:
    """Whether no rescoring of the user is still to come (its `rescore_pending` row is gone)."""
    with session_scope() as session:
        return session.scalar(text("SELECT count(*) FROM rescore_pending WHERE user_id = :id"), {"id": user_id}) == 0


def tasks_held(control, nodes: list[str] | None = None) -> list:
    """Tasks the workers (`nodes`, or every one on the broker) are running, have reserved or hold
    for later: a queue's depth counts none of them."""
    inspect = control.inspect(destination=nodes, timeout=1.0)
    return [tasks for reply in (inspect.active(), inspect.reserved(), inspect.scheduled())
            for tasks in (reply or {}).values() if tasks]


def pipeline_busy(now: dict) -> bool:
    """Whether a GET /api/pipeline answer shows work in flight: outbox rows, users awaiting a
    rescoring, messages ready in a work queue."""
    return bool(now["outbox_pending"] or now["rescore_pending_users"] or now["rescore_queued_users"] or any(
        q["messages"] for q in now["queues"] if not q["name"].endswith("dead_letter")))


def finished_job(client, response, timeout: float = 120.0) -> dict:
    """The job a 202 answer names (its Location), polled until done or failed."""
    assert response.status_code == 202, response.get_json()
    location = response.headers["Location"]
    assert location == f"/api/analytics/jobs/{response.get_json()['id']}"

    def finished():
        job = client.get(location).get_json()
        return job["status"] in ("done", "failed") and job

    return wait_for(finished, timeout=timeout, interval=0.2, what=f"job {location} to finish")


class KillableWorker:
    """A worker of the test's own: its own queues (QUEUE_PREFIX) and Redis keys, one process (`--pool solo`),
    so SIGKILL takes down exactly the process running the task and its broker connection."""

    prefix = f"pulsekill{RUN_ID}"

    def __init__(self) -> None:
        self.process = None

    def start(self, control) -> None:
        name = f"killable-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        self.process = spawn(
            [sys.executable, "-m", "celery", "-A", "services.worker.main", "worker", "-Q", f"{self.prefix}.events",
             "-n", name, "--pool", "solo", "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
            # Its own queues and rescoring keys: its requests for rescoring go to a queue nobody
            # consumes, and must not hold up the session's drains.
            "killable-worker", {"QUEUE_PREFIX": self.prefix, "CACHE_PREFIX": f"{self.prefix}:"},
        )
        # Answering a ping, it has declared its queues: a message published now is not lost.
        wait_for(lambda: control.control.ping(destination=[name], timeout=1.0), timeout=60, what=f"{name} up")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop(self.process)


def kill_between_storing_and_counting(worker: KillableWorker, publisher, documents: list[dict], batch_id: str,
                                      stored: Callable[[], object]) -> None:
    """Start `worker`, send it `documents` as batch `batch_id` and SIGKILL it after it has stored
    the batch in MongoDB (`stored()` is true) and while it waits to count it: the ledger table
    is held locked meanwhile, so the batch is stored, never counted, and its message unacknowledged."""
    from shared.contracts.topology import STORE_EVENTS

    pg = make_url(TEST_ENV["DATABASE_URL"]).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(pg) as blocker:
        blocker.execute("LOCK TABLE applied_batches IN ACCESS EXCLUSIVE MODE")
        worker.start(publisher)
        try:
            publisher.send_task(STORE_EVENTS, kwargs={"events": documents}, task_id=batch_id)
            wait_for(stored, timeout=60, what="the batch stored in MongoDB")
            with psycopg.connect(pg) as observer:
                wait_for(lambda: observer.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'INSERT INTO applied_batches%%'").fetchone()[0] >= 1,
                    timeout=30, what="the worker waiting to count the batch")
            worker.kill()
        finally:
            blocker.rollback()


@contextmanager
def chaos_stack(settings: dict[str, str] | None = None) -> Iterator:
    """scripts.chaos's stack (private servers and Pulse's processes, each killable), with `settings`
    on top of its own; removed, servers, processes and folders, when the block ends, however."""
    from scripts.chaos import ChaosStack

    chaos = ChaosStack()
    chaos.env.update(settings or {})
    try:
        chaos.start()
        yield chaos
    finally:
        chaos.remove()


@contextmanager
def stack_database(stack) -> Iterator:
    """The MongoDB database of a chaos stack, through a client that gives up on a server after 2 s
    (the stack's MongoDB may be the one a test has stopped)."""
    from pymongo import MongoClient

    client = MongoClient(stack.env["MONGO_URI"], serverSelectionTimeoutMS=2000)
    try:
        yield client.get_default_database()
    finally:
        client.close()


@contextmanager
def serve(app) -> Iterator[str]:
    """The test process's app over real HTTP on a free port, for the length of the block (its
    memory is the test's to inspect; an API process of its own is scripts.private_servers.ApiServer)."""
    http = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
