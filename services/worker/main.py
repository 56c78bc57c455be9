"""The worker's Celery app: `celery -A services.worker.main worker -Q pulse.users,pulse.events`."""
from celery import signals

from shared.celery_app import create_celery_app
from shared.mongo import prepare_database

app = create_celery_app("pulse-worker", include=["services.worker.tasks"])


@signals.worker_init.connect
def _indexes(**_kwargs) -> None:
    prepare_database()
