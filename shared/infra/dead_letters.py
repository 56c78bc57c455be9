"""Dead letters you can work with: list them, replay one or all into the queue they died in, purge.

    pulse dead-letters list [--json] [--limit N]
    pulse dead-letters replay <task-id>... | --all
    pulse dead-letters purge <task-id>... | --all

A message lands in the dead-letter queue when its task failed for good: a transient error that
outlasted every retry (shared.infra.retry) or an error that is not transient at all. RabbitMQ's `x-death`
header says which queue it died in, why (`rejected`, `expired`, `delivery_limit`) and when; the
exception it raised is what the workers recorded (shared.infra.task_failures).

Reading the queue takes every message unacknowledged and gives back (requeues) the ones not acted
on, so listing changes nothing, and a message being replayed is acknowledged only once RabbitMQ
has confirmed its copy in the work queue: a crash in between leaves a duplicate, never a loss,
and every Pulse task is idempotent.
"""
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from kombu import Connection, Producer
from kombu.message import Message
from sqlalchemy.exc import SQLAlchemyError

from shared.contracts.settings import get_settings
from shared.contracts.topology import build_topology
from shared.infra import task_failures

# Headers RabbitMQ adds when it dead-letters; a replayed message starts without them.
DEATH_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                 "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count")


@dataclass
class DeadLetter:
    task_id: str
    task: str
    queue: str
    reason: str
    deaths: int
    died_at: str | None
    age_seconds: float | None
    attempts: int | None
    first_error: str | None
    last_error: str | None
    exchange: str
    routing_key: str


def _death(headers: dict[str, Any]) -> dict[str, Any]:
    """The first death: x-death lists the newest first. Its queue, exchange and routing keys are
    where the message was first published."""
    deaths: list[dict[str, Any]] = headers.get("x-death") or []
    return deaths[-1] if deaths else {}


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def _task_id(message: Message) -> str | None:
    """The Celery task id a dead letter carries (protocol 2 puts it in the headers)."""
    return (message.headers or {}).get("id") or message.properties.get("correlation_id")


def describe(message: Message, failures: dict[str, Any], now: datetime) -> DeadLetter:
    # kombu-stubs says str values; RabbitMQ's x-death is a list of tables.
    headers: dict[str, Any] = message.headers or {}
    death = _death(headers)
    died_at = _as_datetime(death.get("time"))
    task_id = _task_id(message) or "?"
    failure = failures.get(task_id)
    routing_keys = death.get("routing-keys") or [message.delivery_info.get("routing_key", "")]
    return DeadLetter(
        task_id=task_id,
        task=headers.get("task", "?"),
        queue=death.get("queue") or headers.get("x-first-death-queue", "?"),
        reason=death.get("reason") or headers.get("x-first-death-reason", "?"),
        deaths=sum(int(d.get("count", 1)) for d in headers.get("x-death") or []) or 1,
        died_at=died_at.isoformat() if died_at else None,
        age_seconds=round((now - died_at).total_seconds(), 1) if died_at else None,
        attempts=failure.attempts if failure else None,
        first_error=failure.first_error if failure else None,
        last_error=failure.last_error if failure else None,
        exchange=death.get("exchange", headers.get("x-first-death-exchange", "")),
        routing_key=routing_keys[0],
    )


class _Channel(Protocol):
    # Every kombu transport's channel has close(); kombu-stubs' StdChannel leaves it out.
    def close(self) -> None: ...


class DeadLetterQueue:
    """The dead-letter queue of this installation (QUEUE_PREFIX), over its own connection."""

    def __init__(self, broker_url: str | None = None, prefix: str | None = None) -> None:
        settings = get_settings()
        self.topology = build_topology(prefix or settings.queue_prefix, settings.queue_type)
        self.connection = Connection(broker_url or settings.broker_url, transport_options={"confirm_publish": True})
        self.connection.ensure_connection(max_retries=3)
        self.channel = self.connection.channel()
        self.queue = self.topology.dead_letter.bind(self.channel)

    def close(self) -> None:
        # Closing the channel gives back every message taken and not acknowledged.
        try:
            cast(_Channel, self.channel).close()
        finally:
            self.connection.release()

    def __enter__(self) -> "DeadLetterQueue":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def take_all(self, limit: int | None = None) -> list[Message]:
        messages: list[Message] = []
        while limit is None or len(messages) < limit:
            message = self.queue.get(no_ack=False, accept=["json"])
            if message is None:
                break
            messages.append(message)
        return messages

    def letters(self, limit: int | None = None) -> list[DeadLetter]:
        messages = self.take_all(limit)
        try:
            failures = task_failures.load([task_id for task_id in map(_task_id, messages) if task_id])
        except SQLAlchemyError:
            failures = {}  # Postgres unreachable: the letters are listed without their errors
        now = datetime.now(UTC)
        return [describe(m, failures, now) for m in messages]

    def _select(self, task_ids: list[str] | None) -> list[Message]:
        messages = self.take_all()
        if task_ids is None:
            return messages
        wanted = set(task_ids)
        chosen = [m for m in messages if _task_id(m) in wanted]
        missing = wanted - {_task_id(m) for m in chosen}
        if missing:
            raise LookupError(f"not in the dead-letter queue: {', '.join(sorted(missing))}")
        return chosen

    def replay(self, task_ids: list[str] | None = None) -> list[str]:
        """Publish each chosen message again to the exchange and routing key it was first sent with,
        with a fresh retry budget, then acknowledge the dead letter."""
        now = datetime.now(UTC)
        chosen = self._select(task_ids)
        producer = Producer(self.channel)
        replayed = []
        for message in chosen:
            letter = describe(message, {}, now)
            headers: dict[str, Any] = {k: v for k, v in (message.headers or {}).items() if k not in DEATH_HEADERS}
            headers["retries"] = 0  # the full retry budget again: the cause was presumably fixed
            properties = message.properties
            producer.publish(
                message.body,
                exchange=letter.exchange,
                routing_key=letter.routing_key,
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                correlation_id=properties.get("correlation_id"),
                reply_to=properties.get("reply_to"),
                # None (the message had none) is passed on as kombu takes it; kombu-stubs types it `int`.
                priority=properties.get("priority"),  # type: ignore[arg-type]
                delivery_mode=2,
                retry=True,
                retry_policy={"max_retries": 3},
            )
            message.ack()
            replayed.append(letter.task_id)
        task_failures.forget(replayed)
        return replayed

    def purge(self, task_ids: list[str] | None = None) -> int:
        chosen = self._select(task_ids)
        for message in chosen:
            message.ack()
        task_failures.forget([task_id for task_id in map(_task_id, chosen) if task_id])
        return len(chosen)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def print_table(letters: list[DeadLetter]) -> None:
    if not letters:
        print("the dead-letter queue is empty")
        return
    print(f"{len(letters)} dead-lettered message(s):")
    for letter in letters:
        print(f"- {letter.task_id}  {letter.task}  from {letter.queue} ({letter.reason}, "
              f"{_age(letter.age_seconds)} ago, attempts {letter.attempts or '?'})")
        print(f"    first error: {letter.first_error or '(not recorded)'}")
        if letter.last_error and letter.last_error != letter.first_error:
            print(f"    last error:  {letter.last_error}")
