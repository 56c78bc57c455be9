"""Why a task failed, kept per task id: RabbitMQ's `x-death` header tells where and when a
message was dead-lettered, not what the task raised. Each retry and the final failure of any Pulse
task is written here, so `pulse dead-letters list` can show the first error beside
the message (and the last one, which is what finally sent it to the dead-letter queue).

Errors are personal data as soon as they quote what a task held (an SMTP refusal quotes the
address it refused). So: e-mail addresses are redacted before an error is written; each row keeps
the user ids of the task's message, so erasure deletes the rows about a person
(`forget_people`); a task that succeeds after retrying drops its row (nothing is left to
explain); and the rest go after APPLIED_BATCHES_RETENTION_DAYS (`prune`).

A row with `retrying` set is a task whose retry is queued: their count, by task, is the retry
backlog (`retry_backlog`, the metric `pulse_task_retry_backlog`)."""
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import signals
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.contracts.tables import TaskFailure
from shared.infra.db import rowcount, session_scope, unpooled_engine
from shared.infra.logging import get_logger

log = get_logger(__name__)
ERROR_CHARS = 2000
# Anything shaped like an address (local@domain), quoted or not: an SMTP refusal names it, and so
# may a driver's error quoting a document.
_ADDRESS = re.compile(r"[^\s<>()\[\]{},;:\"'`@]+@[^\s<>()\[\]{},;:\"'`@]+")
REDACTED = "<address>"


def redact(text: str) -> str:
    return _ADDRESS.sub(REDACTED, text)


def describe(exc: BaseException | str | None) -> str:
    if isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {exc}"
    else:
        text = str(exc)
    return redact(text)[:ERROR_CHARS]


def people(kwargs: dict[str, Any] | None) -> list[int]:
    """The user ids a task's message is about: `user_id` (signup, welcome, erasure) or the users
    of an event batch."""
    kwargs = kwargs or {}
    ids = set()
    if isinstance(kwargs.get("user_id"), int):
        ids.add(kwargs["user_id"])
    for event in kwargs.get("events") or ():
        if isinstance(event, dict) and isinstance(event.get("user_id"), int):
            ids.add(event["user_id"])
    return sorted(ids)


def record(task_id: str, task_name: str, error: str, user_ids: list[int] | None = None,
           retrying: bool = False) -> None:
    now = datetime.now(UTC)
    statement = insert(TaskFailure).values(
        task_id=task_id, task_name=task_name, first_error=error, last_error=error, attempts=1,
        first_failed_at=now, last_failed_at=now, user_ids=user_ids or None, retrying=retrying,
    )
    statement = statement.on_conflict_do_update(
        index_elements=[TaskFailure.task_id],
        set_={
            "last_error": statement.excluded.last_error,
            "attempts": TaskFailure.attempts + 1,
            "last_failed_at": statement.excluded.last_failed_at,
            "user_ids": statement.excluded.user_ids,
            "retrying": statement.excluded.retrying,
        },
    )
    # Celery also reports failures from the worker's main process (time limits, rejections),
    # which forks its pool later.
    with unpooled_engine().begin() as connection:
        connection.execute(statement)


def _record_quietly(task_id: str | None, task_name: str | None, error: BaseException | str | None,
                    kwargs: dict[str, Any] | None, retrying: bool) -> None:
    # A failure that cannot be recorded (Postgres down) must not change what happens to the task:
    # the message is retried or dead-lettered all the same, only its reason is missing.
    if not task_id:
        return
    try:
        record(task_id, task_name or "?", describe(error), people(kwargs), retrying)
    except Exception as exc:  # noqa: BLE001
        log.warning("task_failure_not_recorded", task_id=task_id, error=describe(exc))


@signals.task_retry.connect
def _on_retry(sender: object = None, request: object = None, reason: BaseException | str | None = None,
              **_kwargs: Any) -> None:
    _record_quietly(getattr(request, "id", None), getattr(sender, "name", None), reason,
                    getattr(request, "kwargs", None), retrying=True)


@signals.task_failure.connect
def _on_failure(sender: object = None, task_id: str | None = None, exception: BaseException | None = None,
                kwargs: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    _record_quietly(task_id, getattr(sender, "name", None), exception, kwargs, retrying=False)


@signals.task_success.connect
def _on_success(sender: object = None, **_kwargs: Any) -> None:
    # Only a task that has retried can have a row: the first try of every other task costs nothing.
    request = getattr(sender, "request", None)
    if request is None or not request.retries or not request.id:
        return
    try:
        forget([request.id])
    except Exception as exc:  # noqa: BLE001 - the prune removes it later; the task succeeded all the same
        log.warning("task_failure_not_forgotten", task_id=request.id, error=describe(exc))


def load(task_ids: list[str]) -> dict[str, TaskFailure]:
    if not task_ids:
        return {}
    with session_scope() as session:
        rows = session.scalars(select(TaskFailure).where(TaskFailure.task_id.in_(task_ids))).all()
        session.expunge_all()
    return {row.task_id: row for row in rows}


def forget(task_ids: list[str]) -> None:
    if task_ids:
        with session_scope() as session:
            session.execute(delete(TaskFailure).where(TaskFailure.task_id.in_(task_ids)))


def forget_people(session: Session, user_ids: list[int]) -> int:
    """Erasure: the failures of tasks about these people (in the caller's transaction)."""
    if not user_ids:
        return 0
    return rowcount(session.execute(delete(TaskFailure).where(TaskFailure.user_ids.overlap(sorted(user_ids)))))


def retry_backlog() -> dict[str, int]:
    """Tasks whose retry is queued, by task name (the partial index holds only those)."""
    with session_scope() as session:
        rows = session.execute(select(TaskFailure.task_name, func.count()).where(TaskFailure.retrying)
                               .group_by(TaskFailure.task_name)).all()
    return {name: count for name, count in rows}


def prune(retention_days: int) -> int:
    """Forget failures older than the retention (daily, with the ledger of applied batches)."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    with session_scope() as session:
        return rowcount(session.execute(delete(TaskFailure).where(TaskFailure.last_failed_at < cutoff)))
