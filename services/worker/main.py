"""The worker's Celery app: `celery -A services.worker.main worker -Q pulse.users,pulse.events`."""
from celery import signals

from shared.infra.celery_app import create_celery_app, declare_topology
from shared.infra.mongo import prepare_database
from shared.infra.tracing import trace_worker_processes

app = create_celery_app("pulse-worker", include=["services.worker.tasks"])
# One app, two processes: the mailer (-n mailer-...) consumes pulse.email only, and its spans
# say so, as its log lines do.
trace_worker_processes(lambda hostname: "pulse-mailer" if hostname.startswith("mailer-") else "pulse-worker")


@signals.worker_init.connect
def _prepare(**_kwargs) -> None:
    prepare_database()
    declare_topology(app)
