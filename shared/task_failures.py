"""Why a task failed, kept per task id: RabbitMQ's `x-death` header tells where and when a
message was dead-lettered, not what the task raised. Each retry and the final failure of any Pulse
task is written here, so `python -m shared.dead_letters list` can show the first error beside
the message (and the last one, which is what finally sent it to the dead-letter queue)."""
from datetime import UTC, datetime, timedelta

from celery import signals
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from shared.db import session_scope, unpooled_engine
from shared.logging import get_logger
from shared.models import TaskFailure

log = get_logger(__name__)
ERROR_CHARS = 2000


def describe(exc: BaseException | str | None) -> str:
    if isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {exc}"
    else:
        text = str(exc)
    return text[:ERROR_CHARS]


def record(task_id: str, task_name: str, error: str) -> None:
    now = datetime.now(UTC)
    statement = insert(TaskFailure).values(
        task_id=task_id, task_name=task_name, first_error=error, last_error=error, attempts=1,
        first_failed_at=now, last_failed_at=now,
    )
    statement = statement.on_conflict_do_update(
        index_elements=[TaskFailure.task_id],
        set_={
            "last_error": statement.excluded.last_error,
            "attempts": TaskFailure.attempts + 1,
            "last_failed_at": statement.excluded.last_failed_at,
        },
    )
    # Celery also reports failures from the worker's main process (time limits, rejections),
    # which forks its pool later.
    with unpooled_engine().begin() as connection:
        connection.execute(statement)


def _record_quietly(task_id: str | None, task_name: str | None, error) -> None:
    # A failure that cannot be recorded (Postgres down) must not change what happens to the task:
    # the message is retried or dead-lettered all the same, only its reason is missing.
    if not task_id:
        return
    try:
        record(task_id, task_name or "?", describe(error))
    except Exception as exc:  # noqa: BLE001
        log.warning("task_failure_not_recorded", task_id=task_id, error=describe(exc))


@signals.task_retry.connect
def _on_retry(sender=None, request=None, reason=None, **_kwargs) -> None:
    _record_quietly(getattr(request, "id", None), getattr(sender, "name", None), reason)


@signals.task_failure.connect
def _on_failure(sender=None, task_id=None, exception=None, **_kwargs) -> None:
    _record_quietly(task_id, getattr(sender, "name", None), exception)


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


def prune(retention_days: int) -> int:
    """Forget failures older than the retention (daily, with the ledger of applied batches)."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    with session_scope() as session:
        return session.execute(delete(TaskFailure).where(TaskFailure.last_failed_at < cutoff)).rowcount
