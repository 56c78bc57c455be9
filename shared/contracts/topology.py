"""The RabbitMQ topology and task names: the one contract producers and consumers share.

Producers publish by task *name* (``send_task``) so the API never imports worker code.

Queues are durable, classic by default or quorum (QUEUE_TYPE): quorum queues replicate over a
RabbitMQ cluster, which a single native node gains nothing from; compose runs them.
Each work queue dead-letters into a fanout exchange whose queue keeps what failed for good, so a
poison message is parked for inspection instead of being redelivered forever or dropped.
"""
from dataclasses import dataclass
from typing import Any

from kombu import Exchange, Queue

# Task names (stable wire contract).
USER_CREATED = "pulse.worker.user_created"
STORE_EVENTS = "pulse.worker.store_events"
# An identified visitor's events become the user's (services.worker.merge); published by the outbox relay.
MERGE_VISITOR = "pulse.worker.merge_visitor"
SEND_WELCOME = "pulse.worker.send_welcome"
ERASE_USER = "pulse.worker.erase_user"
PRUNE_LEDGER = "pulse.worker.prune_applied_batches"
RECONCILE_ERASURES = "pulse.worker.reconcile_erasures"
COMPUTE_PROFILES = "pulse.analytics.compute_profiles"
FIT_MODELS = "pulse.analytics.fit_models"
SWEEP_RESCORING = "pulse.analytics.sweep_rescoring"
CUSTOMER_STATS = "pulse.analytics.customer_stats"
VALIDATE_MODELS = "pulse.analytics.validate_models"
# A funnel, retention or lifecycle query run as a job (past the API's inline time limit, or asked so).
RUN_INSIGHT = "pulse.analytics.run_insight"

# Routing keys.
RK_USER_CREATED = "user.created"
RK_USER_ERASE = "user.erase"
RK_USER_RECONCILE = "user.reconcile"
RK_EVENTS_INGEST = "events.ingest"
RK_EVENTS_MERGE = "events.merge"
RK_EMAIL_WELCOME = "email.welcome"
RK_EVENTS_PRUNE = "events.prune"
RK_ANALYTICS_PROFILES = "analytics.profiles"
RK_ANALYTICS_FIT = "analytics.fit"
RK_ANALYTICS_SWEEP = "analytics.sweep"
RK_ANALYTICS_CUSTOMER_STATS = "analytics.customer_stats"
RK_ANALYTICS_VALIDATE = "analytics.validate"
RK_ANALYTICS_INSIGHT = "analytics.insight"


@dataclass(frozen=True)
class Topology:
    exchange: Exchange
    dead_letter_exchange: Exchange
    users: Queue
    events: Queue
    email: Queue
    analytics: Queue
    dead_letter: Queue

    @property
    def work_queues(self) -> tuple[Queue, ...]:
        return (self.users, self.events, self.email, self.analytics)

    @property
    def all_queues(self) -> tuple[Queue, ...]:
        return (*self.work_queues, self.dead_letter)

    def routes(self) -> dict[str, dict[str, str]]:
        by_task = {
            USER_CREATED: (self.users, RK_USER_CREATED),
            ERASE_USER: (self.users, RK_USER_ERASE),
            RECONCILE_ERASURES: (self.users, RK_USER_RECONCILE),
            STORE_EVENTS: (self.events, RK_EVENTS_INGEST),
            MERGE_VISITOR: (self.events, RK_EVENTS_MERGE),
            SEND_WELCOME: (self.email, RK_EMAIL_WELCOME),
            PRUNE_LEDGER: (self.events, RK_EVENTS_PRUNE),
            COMPUTE_PROFILES: (self.analytics, RK_ANALYTICS_PROFILES),
            FIT_MODELS: (self.analytics, RK_ANALYTICS_FIT),
            SWEEP_RESCORING: (self.analytics, RK_ANALYTICS_SWEEP),
            CUSTOMER_STATS: (self.analytics, RK_ANALYTICS_CUSTOMER_STATS),
            VALIDATE_MODELS: (self.analytics, RK_ANALYTICS_VALIDATE),
            RUN_INSIGHT: (self.analytics, RK_ANALYTICS_INSIGHT),
        }
        return {
            task: {"queue": queue.name, "exchange": self.exchange.name, "routing_key": key}
            for task, (queue, key) in by_task.items()
        }


# A quorum queue counts deliveries: a message whose worker dies under it this many times (a task
# that crashes its process) is dead-lettered as `delivery_limit` instead of looping for ever.
# Celery's retries do not count: each retry is a new message, the one that ran is acknowledged
# (shared.infra.retry.UntilDone), so a task retrying through a long outage never reaches this limit.
QUORUM_DELIVERY_LIMIT = 20


def queue_type_arguments(queue_type: str) -> dict[str, Any]:
    if queue_type == "quorum":
        return {"x-queue-type": "quorum", "x-delivery-limit": QUORUM_DELIVERY_LIMIT}
    if queue_type == "classic":
        # No argument at all: queues declared before the setting existed stay equivalent.
        return {}
    raise ValueError(f"QUEUE_TYPE must be classic or quorum, not {queue_type!r}")


def build_topology(prefix: str = "pulse", queue_type: str = "classic") -> Topology:
    exchange = Exchange(prefix, type="topic", durable=True)
    dlx = Exchange(f"{prefix}.dlx", type="fanout", durable=True)
    type_args = queue_type_arguments(queue_type)
    dead_letter_args = {"x-dead-letter-exchange": dlx.name, **type_args}

    def work_queue(name: str, binding: str) -> Queue:
        return Queue(
            f"{prefix}.{name}",
            exchange=exchange,
            routing_key=binding,
            durable=True,
            queue_arguments=dict(dead_letter_args),
        )

    return Topology(
        exchange=exchange,
        dead_letter_exchange=dlx,
        users=work_queue("users", "user.*"),
        events=work_queue("events", "events.*"),
        # Its own queue and worker process: a slow or unreachable SMTP server delays e-mails only.
        email=work_queue("email", "email.*"),
        analytics=work_queue("analytics", "analytics.*"),
        dead_letter=Queue(f"{prefix}.dead_letter", exchange=dlx, durable=True,
                          queue_arguments={"x-queue-type": "quorum"} if queue_type == "quorum" else None),
    )
