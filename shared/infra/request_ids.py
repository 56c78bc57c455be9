"""One id from a request to its last effect: the API answer, the outbox row, every Celery message
sent on its behalf, every log line written meanwhile, and the welcome e-mail.

The API accepts a client's `X-Request-ID` (letters, digits and `._:-`, at most 128) or makes one,
answers with it, puts it in problem bodies and binds it to the log context (structlog
contextvars: every line logged while the request runs carries `request_id`). An outbox row keeps
it in its own column; the relay binds it while publishing the row. A Celery message carries it
in its `request_id` header: each worker binds it for the task's duration (`task_prerun`), and
whatever a task publishes carries it on (`before_task_publish`). A coalesced rescoring drain
carries the id of the change that scheduled it.
"""
import re
import uuid
from typing import Any

import structlog
from celery import signals

HEADER = "X-Request-ID"
CELERY_HEADER = "request_id"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def accept(value: str | None) -> str:
    """The client's id when it is a sensible one, else a new one."""
    return value if value and _VALID.fullmatch(value) else uuid.uuid4().hex


def bind(request_id: str | None) -> None:
    structlog.contextvars.unbind_contextvars(CELERY_HEADER)
    if request_id:
        structlog.contextvars.bind_contextvars(request_id=request_id)


def current() -> str | None:
    return structlog.contextvars.get_contextvars().get(CELERY_HEADER)


def clear() -> None:
    structlog.contextvars.unbind_contextvars(CELERY_HEADER)


@signals.before_task_publish.connect
def _carry(headers: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    request_id = current()
    if request_id and headers is not None:
        headers.setdefault(CELERY_HEADER, request_id)


@signals.task_prerun.connect
def _bind_task(task: Any = None, **_kwargs: Any) -> None:
    bind(getattr(task.request, CELERY_HEADER, None) if task is not None else None)


@signals.task_postrun.connect
def _clear_task(**_kwargs: Any) -> None:
    clear()
