"""The analytics service's Celery app and beat schedule:
`celery -A services.analytics.main worker -Q pulse.analytics` and `celery -A services.analytics.main beat`."""
from celery import signals
from celery.schedules import crontab

from shared.contracts.settings import get_settings
from shared.contracts.topology import CUSTOMER_STATS, FIT_MODELS, PRUNE_LEDGER, RECONCILE_ERASURES, SWEEP_RESCORING
from shared.infra.celery_app import create_celery_app, declare_topology
from shared.infra.mongo import prepare_database
from shared.infra.tracing import trace_worker_processes

app = create_celery_app("pulse-analytics", include=["services.analytics.tasks"])
trace_worker_processes("pulse-analytics")  # beat, also started from this module, stays untraced
app.conf.beat_schedule = {
    "refit-population-models": {
        "task": FIT_MODELS,
        "schedule": crontab(hour=get_settings().model_refit_cron_hour, minute=0),
    },
    # The worker's ledger of counted batches (shared.pipeline.summaries): routed to the worker by name.
    "prune-applied-batches": {
        "task": PRUNE_LEDGER,
        "schedule": crontab(hour=get_settings().model_refit_cron_hour, minute=30),
    },
    # Rescoring that Redis or a killed worker lost (shared.pipeline.rescore). No `expires`: an expired task
    # is revoked, and a revoked late-ack task is rejected, i.e. dead-lettered. Sweeps queued while
    # no analytics worker ran are each one indexed query when it returns.
    "sweep-rescoring": {"task": SWEEP_RESCORING, "schedule": get_settings().rescore_sweep_seconds},
    # The dashboard's customer histograms (services.analytics.customer_stats): one batch over the
    # summaries, so a dashboard refresh costs a document read at any population size.
    "customer-stats": {"task": CUSTOMER_STATS, "schedule": get_settings().customer_stats_seconds},
    # Erasures whose message never did its work, and people deleted from Postgres some other way
    # (shared.pipeline.erasure): bounded work per run, routed to the worker by name.
    "reconcile-erasures": {"task": RECONCILE_ERASURES, "schedule": get_settings().erasure_reconcile_seconds},
}


@signals.worker_init.connect
def _prepare(**_kwargs) -> None:
    prepare_database()
    declare_topology(app)


@signals.worker_ready.connect
def _first_customer_stats(**_kwargs) -> None:
    # Beat's first interval run comes a whole interval after it starts: compute the dashboard's
    # distributions now, so a fresh stack shows them at once.
    app.send_task(CUSTOMER_STATS)
