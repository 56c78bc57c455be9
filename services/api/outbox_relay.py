"""The outbox relay: publishes committed outbox rows to RabbitMQ with publisher confirms.

Run as its own process (`python -m services.api.outbox_relay`); any number may run at once.
Each round locks a batch of pending rows with FOR UPDATE SKIP LOCKED, so two relays never
publish the same row, publishes each (send_task blocks until RabbitMQ confirms), and marks the
published rows in the same transaction. A crash between the confirm and the commit republishes
those rows: consumers deduplicate by the outbox id, which travels as the task/message id.

Published rows are kept OUTBOX_RETENTION_HOURS (a signup's message holds name, e-mail and street,
so keeping them for ever would keep what erasure and the retention promise let go), then the
relay deletes them, PRUNE_BATCH at a time through a partial index, every PRUNE_EVERY seconds
at most (sooner with a shorter retention).
"""
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

from celery import Celery
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import delete, select

from shared.contracts.settings import get_settings
from shared.contracts.tables import OutboxMessage
from shared.infra import request_ids, tracing
from shared.infra.celery_app import create_celery_app
from shared.infra.db import rowcount, session_scope
from shared.infra.logging import configure_logging, get_logger

log = get_logger("pulse.outbox_relay")
tracer = tracing.tracer("pulse.outbox_relay")
PRUNE_BATCH = 1000
PRUNE_EVERY = 60.0


def prune_published(retention_hours: float, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` messages published longer than the retention ago. Returns how many."""
    cutoff = datetime.now(UTC) - timedelta(hours=retention_hours)
    with session_scope() as session:
        oldest = (select(OutboxMessage.id).where(OutboxMessage.published_at < cutoff)
                  .order_by(OutboxMessage.published_at).limit(batch).with_for_update(skip_locked=True))
        return rowcount(session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(oldest.scalar_subquery()))))


class Pruner:
    """Runs `prune_published` from the relay's loop: batch after batch while there is a backlog,
    then once every PRUNE_EVERY seconds (a tenth of the retention when that is shorter)."""

    def __init__(self, retention_hours: float) -> None:
        self.retention_hours = retention_hours
        self.every = min(PRUNE_EVERY, retention_hours * 360.0)
        self.due = 0.0

    def __call__(self) -> None:
        if time.monotonic() < self.due:
            return
        try:
            pruned = prune_published(self.retention_hours)
        except Exception as exc:  # Postgres unavailable: the publish loop reports it; try later
            log.warning("outbox_prune_failed", error=type(exc).__name__)
            pruned = 0
        if pruned:
            log.info("outbox_pruned", count=pruned)
        self.due = 0.0 if pruned >= PRUNE_BATCH else time.monotonic() + self.every


def publish_pending(app: Celery, batch_size: int) -> tuple[int, Exception | None]:
    """One round. Returns (rows published, the broker error that stopped the round, if any)."""
    published, error = 0, None
    with session_scope() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.published_at.is_(None))
            .order_by(OutboxMessage.created_at)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            request_ids.bind(row.request_id)  # this row's lines and its message carry the request's id
            # One span per row in the trace of the request that wrote it; the Celery
            # instrumentation publishes inside it, so the message headers carry it on.
            with tracer.start_as_current_span(
                f"outbox publish {row.task_name}", context=tracing.continued_from(row.traceparent),
                kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "postgres-outbox", "messaging.destination.name": row.task_name,
                            "messaging.message.id": str(row.id), "pulse.outbox.attempts": row.attempts},
            ) as span:
                try:
                    app.send_task(
                        row.task_name,
                        kwargs=row.payload,
                        task_id=str(row.id),
                        message_id=str(row.id),
                        headers={request_ids.CELERY_HEADER: row.request_id} if row.request_id else None,
                    )
                except Exception as exc:  # broker down or message nacked: keep the row pending
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    row.attempts += 1
                    row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
                    error = exc
                    break
            row.published_at = datetime.now(UTC)
            published += 1
            log.info("outbox_message_published", outbox_id=str(row.id), task=row.task_name)
        request_ids.clear()
    return published, error


def run(stop: threading.Event | None = None) -> None:
    configure_logging()
    tracing.configure_tracing("pulse-relay")  # before the first connection: it instruments engines
    settings = get_settings()
    app = create_celery_app("pulse-outbox-relay")
    stop = stop or threading.Event()
    log.info("relay_started", batch_size=settings.outbox_batch_size)
    idle = settings.outbox_poll_interval
    prune = Pruner(settings.outbox_retention_hours)
    while not stop.is_set():
        prune()
        try:
            published, error = publish_pending(app, settings.outbox_batch_size)
        except Exception as exc:  # Postgres unavailable: wait and try again, nothing is lost
            published, error = 0, exc
        if published:
            log.info("outbox_published", count=published)
        if error is not None:
            log.warning("outbox_publish_failed", error=str(error))
            idle = min(idle * 2, 10.0)  # back off while a dependency is down
            stop.wait(idle)
        elif published < settings.outbox_batch_size:
            idle = settings.outbox_poll_interval
            stop.wait(idle)
    tracing.shutdown()  # send what is batched
    log.info("relay_stopped")


def main() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(stop)


if __name__ == "__main__":
    main()
