"""The Celery app factory: every Pulse process builds its app here, so all agree on the wire."""
from typing import Any

from celery import Celery, signals
from celery.app.amqp import AMQP, task_message

from shared.contracts.settings import Settings, get_settings
from shared.contracts.topology import build_topology
from shared.infra import request_ids, task_failures  # noqa: F401  (connect the request ids and the failure recorder to Celery's signals)
from shared.infra.logging import configure_logging


def arguments_shown(kwargs: dict[str, Any] | None) -> str:
    """What a task message says its arguments are (`kwargsrepr`): the ids only. Flower, the
    monitoring events and the logs show this instead of the arguments, which hold names,
    e-mail and street addresses (a signup) or a person's events (a batch), and which an erasure
    could not reach in Flower's memory."""
    shown = {}
    for name, value in (kwargs or {}).items():
        if name.endswith("_id") or value is None or isinstance(value, bool | int | float):
            shown[name] = value  # ids, flags and numbers: never a name or an address
        elif isinstance(value, list | tuple):
            shown[name] = f"<{len(value)} items>"
        else:
            shown[name] = "<hidden>"
    return repr(shown)


class PrivateArgumentsAMQP(AMQP):
    """Every message Pulse publishes (the relay, the workers, Celery's own retries) carries
    `arguments_shown` as its kwargsrepr and no argsrepr (Pulse tasks take keyword arguments)."""

    def as_task_v2(self, task_id: str, name: str, args: tuple[Any, ...] | None = None,
                   kwargs: dict[str, Any] | None = None, *more: Any, **options: Any) -> task_message:
        if options.get("kwargsrepr") is None:
            options["kwargsrepr"] = arguments_shown(kwargs)
        if options.get("argsrepr") is None:
            options["argsrepr"] = f"<{len(args or ())} arguments>"
        return super().as_task_v2(task_id, name, args, kwargs, *more, **options)


def create_celery_app(name: str, include: list[str] | None = None, settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    topology = build_topology(settings.queue_prefix, settings.queue_type)
    app = Celery(name, broker=settings.broker_url, backend=settings.result_backend, include=include or [],
                 amqp=PrivateArgumentsAMQP)
    app.conf.update(
        # JSON only: a pickle on the wire is remote code execution.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # At-least-once: ack after the task ran, requeue if the worker process dies mid-task,
        # and reject (dead-letter) instead of ack when a task fails for good.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=False,
        worker_prefetch_multiplier=1,
        task_default_delivery_mode="persistent",
        # Publisher confirms: send_task returns only once RabbitMQ has the message on disk.
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        task_time_limit=300,
        task_soft_time_limit=240,
        task_ignore_result=True,
        result_expires=3600,
        task_queues=topology.all_queues,
        task_routes=topology.routes(),
        task_default_queue=topology.users.name,
        task_default_exchange=topology.exchange.name,
        task_default_exchange_type="topic",
        task_create_missing_queues=False,
        # Celery must not reconfigure the root logger: structlog owns logging (see below).
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # Flower's live view
        task_send_sent_event=True,
        enable_utc=True,
        timezone="UTC",
    )
    return app


def declare_topology(app: Celery) -> None:
    """Declare every exchange and queue, the dead-letter pair included: no process consumes the
    dead-letter queue, and RabbitMQ drops what it dead-letters to an exchange that does not exist."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in app.amqp.queues.values():
            queue.bind(channel).declare()


@signals.setup_logging.connect
def _use_pulse_logging(**_kwargs: Any) -> None:
    # Connecting this signal stops Celery from installing its own handlers.
    configure_logging()
