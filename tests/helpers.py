"""Small builders shared by integration and end-to-end tests."""
import uuid
from contextlib import contextmanager

from sqlalchemy import event

from shared.infra.db import get_engine


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
    from tests.fixtures import wait_for

    assert response.status_code == 202, response.get_json()
    location = response.headers["Location"]
    assert location == f"/api/analytics/jobs/{response.get_json()['id']}"

    def finished():
        job = client.get(location).get_json()
        return job["status"] in ("done", "failed") and job

    return wait_for(finished, timeout=timeout, interval=0.2, what=f"job {location} to finish")
