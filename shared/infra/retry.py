"""What counts as a transient failure, retried with exponential backoff and jitter."""
import smtplib
import time
from typing import Any, Protocol, cast

import redis
from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout
from sqlalchemy.exc import OperationalError as DatabaseError

from shared.contracts.settings import get_settings

TRANSIENT_ERRORS = (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    redis.ConnectionError,
    redis.TimeoutError,
    smtplib.SMTPServerDisconnected,
    smtplib.SMTPConnectError,
    smtplib.SMTPDataError,
    ConnectionError,
    TimeoutError,
    BrokerError,
    DatabaseError,
)


def retry_policy(until_done: bool = False) -> dict[str, Any]:
    """2, 4, 8, ... seconds between tries (capped at TASK_RETRY_BACKOFF_MAX_SECONDS), fully jittered.

    Most tasks try TASK_MAX_RETRIES times, then fail, are rejected, and RabbitMQ dead-letters them
    (a welcome e-mail days late is worse than none; a profile is recomputed anyway). `until_done`
    tasks (an erasure, an event batch answered 202, a signup answered 201) retry for as long as the
    store is down: nothing a client was told is kept may be parked in the dead-letter queue by an
    outage. Their base class (UntilDone) also keeps a retry that cannot be published from
    becoming a dead letter.
    """
    settings = get_settings()
    policy: dict[str, Any] = {
        "autoretry_for": TRANSIENT_ERRORS,
        "retry_backoff": 2,
        "retry_backoff_max": settings.task_retry_backoff_max_seconds,
        "retry_jitter": True,
        "max_retries": None if until_done else settings.task_max_retries,
    }
    if until_done:
        policy["base"] = UntilDone
        # A store that hangs (a paused server, a half-open connection) is a store that is down:
        # the soft time limit ends the try, and the task is retried like any transient failure
        # instead of failing for good. A batch is at most EVENTS_BATCH_MAX events: minutes of work
        # mean waiting, never progress.
        policy["autoretry_for"] = (*TRANSIENT_ERRORS, SoftTimeLimitExceeded)
    return policy


class _RejectFields(Protocol):
    # Reject.__init__ sets these; celery-types' stub of Reject leaves them out.
    reason: Exception | str | None
    requeue: bool | None


class UntilDone(Task[Any, Any]):
    """A task that is never given up on while its error is transient.

    How this meets RabbitMQ: Celery retries a task by publishing a new copy of its message (with a
    countdown, same task id, `retries` + 1) and then acknowledging the one it ran, so retries never
    count against a quorum queue's `x-delivery-limit`, which counts redeliveries only (a worker that
    died or lost its connection while holding the message: late acks requeue it). A message is
    dead-lettered when a task fails for good (rejected) or hits that limit; `max_retries=None`
    removes the first for transient errors.

    The one path left is a retry whose publish fails (Celery turns that into a reject without
    requeue: a dead letter). Here the publish is tried again with the capped backoff for up to
    PUBLISH_PATIENCE seconds (below the soft time limit), then the message is requeued: one
    redelivery, not a dead letter. When the broker itself is gone, the reject cannot reach it
    either, and RabbitMQ requeues the unacknowledged message when the connection drops.
    """

    PUBLISH_PATIENCE = 120.0
    # Set on each task class from its retry policy (retry_policy() above); not part of Task's stub.
    retry_backoff_max: int

    def retry(self, *args: Any, **kwargs: Any) -> Retry:
        deadline = time.monotonic() + self.PUBLISH_PATIENCE
        attempt = 0
        while True:
            try:
                return super().retry(*args, **kwargs)
            except Reject as raised:
                reject = cast(_RejectFields, raised)
                # Celery raises Reject(requeue=False) only when publishing the retry failed.
                if reject.requeue or time.monotonic() >= deadline:
                    raise Reject(reject.reason, requeue=True) from None
                wait = min(self.retry_backoff_max, 2 ** attempt, max(0.0, deadline - time.monotonic()))
                attempt += 1
                time.sleep(wait)


RETRY_POLICY = retry_policy()
RETRY_UNTIL_DONE = retry_policy(until_done=True)
