"""The worker's Celery app: `celery -A services.worker.main worker -Q pulse.users,pulse.events`."""
from celery import signals

from shared.celery_app import create_celery_app, declare_topology
from shared.mongo import prepare_database

app = create_celery_app("pulse-worker", include=["services.worker.tasks"])


@signals.worker_init.connect
def _prepare(**_kwargs) -> None:
    prepare_database()
    declare_topology(app)
