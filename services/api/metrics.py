"""Prometheus metrics at `GET /metrics` on the API's own port.

* HTTP: every request by method, route (the OpenAPI path, `unmatched` for a 404) and status, and
  its latency, counted by a WSGI middleware outside everything else, so the cached-profile fast
  path (services.api.profile_hits) is counted like the routes Flask serves. The API runs as
  several granian processes: with PROMETHEUS_MULTIPROC_DIR set (the Procfile and docker/start set
  it, emptied at each start) every process writes its figures there and a scrape adds them up.
* The profile cache: hits, misses, bypasses (shared.pipeline.profile_cache counts them).
* The pipeline and the domain, read from the stores at scrape time: outbox pending and the age
  of its oldest row, events stored and duplicates skipped (shared.infra.counters), the ingestion
  lag histogram (shared.infra.ingestion_lag), users awaiting
  rescoring, profiles rescored, tasks waiting to retry (the retry backlog: event batches, erasures,
  signups retrying while a store is down), dead letters, the current model (version, age, convergence,
  customers), and each purchase model's newest rolling-holdout check (`pulse_model_holdout_*`). A store that does not
  answer leaves its figures out and sets
  `pulse_metrics_source_up{source=...}` to 0, so a scrape never fails with it. `/metrics` is open
  (a Prometheus scraper has no key; the figures are counts, no person's data), so each store is
  read at most once a second per API process and every scrape meanwhile shares that reading
  (services.api.shared_reads): scraping in a loop loads no store.

docs/metrics.md lists every family. Counts and timings only: no id, name or address is a label.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from sqlalchemy import text

from services.api.contract import openapi_path
from services.api.shared_reads import SharedRead
from shared.analytics import fitted_models, holdouts
from shared.contracts.settings import get_settings
from shared.contracts.topology import ERASE_USER, STORE_EVENTS, USER_CREATED
from shared.infra import counters, ingestion_lag
from shared.infra.db import session_scope
from shared.infra.logging import get_logger
from shared.infra.mongo import get_database
from shared.pipeline import rescore

log = get_logger(__name__)
ROUTE = "pulse.route"  # the WSGI environ key where the route template is left for the middleware
UNMATCHED = "unmatched"

REQUESTS = Counter("pulse_http_requests_total", "HTTP requests answered, by method, route and status",
                   ["method", "route", "status"])
LATENCY = Histogram("pulse_http_request_duration_seconds", "Time to answer an HTTP request, by method and route",
                    ["method", "route"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_CHILDREN = 4096


class RequestMetrics:
    """Outermost WSGI middleware: counts and times every request."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app
        # The labelled children, looked up once per (method, route, status): `labels()` validates
        # and locks on every call, a measurable share of a ~0.5 ms cached-profile hit
        # (bench/metrics_cost.py). Routes are templates, methods are folded into a known few and
        # statuses are the API's own, so this stays small; the cap only guards against a surprise.
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    def _children_for(self, method: str, route: str, status: str):
        if method not in _METHODS:
            method = "other"  # folded before the key: a client sending made-up methods adds nothing
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (REQUESTS.labels(method, route, status), LATENCY.labels(method, route))
            if len(self._children) < _MAX_CHILDREN:
                self._children[key] = children
        return children

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        status = ["500"]

        def recording(status_line, headers, exc_info=None):
            status[0] = status_line[:3]
            return start_response(status_line, headers, exc_info)

        try:
            return self.wsgi_app(environ, recording)
        finally:
            count, latency = self._children_for(environ.get("REQUEST_METHOD", "?"), environ.get(ROUTE, UNMATCHED),
                                                status[0])
            count.inc()
            latency.observe(time.perf_counter() - started)


UNTIL_DONE_TASKS = (STORE_EVENTS, ERASE_USER, USER_CREATED)
_RETRY_BACKLOG = text("SELECT task_name, count(*) AS waiting FROM task_failures WHERE retrying GROUP BY task_name")
_OUTBOX = text("SELECT count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS oldest "
               "FROM outbox WHERE published_at IS NULL")


def queue_depths(names: list[str]) -> dict[str, tuple[int, int]]:
    """(messages ready, consumers) of each queue, over one connection. One try: with the broker
    down this raises in 2 s, not after kombu's retries, so neither a scrape nor a dashboard
    polling every 5 s ties up the API's threads."""
    with current_app.extensions["celery"].connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        channel = conn.default_channel
        declared = {name: channel.queue_declare(name, passive=True) for name in names}
    return {name: (ok.message_count, ok.consumer_count) for name, ok in declared.items()}


def dead_letter_queue() -> str:
    return f"{get_settings().queue_prefix}.dead_letter"


class PipelineCollector:
    """Reads the pipeline and domain figures at scrape time, from every store but those in
    `skip` (services.api.pipeline reads RabbitMQ itself, for every queue at once)."""

    def __init__(self, skip: tuple[str, ...] = ()):
        self.skip = skip

    def collect(self):
        up = GaugeMetricFamily("pulse_metrics_source_up", "Whether a store answered this scrape (1) or not (0)",
                               labels=["source"])
        for source, shared in _SOURCES.items():
            if source in self.skip:
                continue
            try:
                families = shared.get()
            except Exception as exc:  # a metrics scrape reports a store down, it does not fail
                log.warning("metrics_source_down", source=source, error=type(exc).__name__)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up

    @staticmethod
    def _postgres():
        with session_scope() as session:
            outbox = session.execute(_OUTBOX).one()
            pending = session.scalar(text("SELECT count(*) FROM rescore_pending"))
            retrying = session.execute(_RETRY_BACKLOG).all()
            holdout_rows = holdouts.latest(session)
        yield GaugeMetricFamily("pulse_outbox_pending", "Outbox messages (signups, erasures) not yet published",
                                value=outbox.pending)
        yield GaugeMetricFamily("pulse_outbox_oldest_pending_age_seconds",
                                "Age of the oldest unpublished outbox message (0 when none)",
                                value=float(outbox.oldest or 0))
        backlog = GaugeMetricFamily("pulse_rescore_pending_users",
                                    "Users whose profile awaits a rescoring: durably (postgres) and queued (redis)",
                                    labels=["store"])
        backlog.add_metric(["postgres"], pending)
        yield backlog
        waiting = GaugeMetricFamily("pulse_task_retry_backlog",
                                    "Tasks whose retry is queued because a store is down (event batches, erasures, "
                                    "signups retry until it is back), by task", labels=["task"])
        # The tasks that retry until done are always present (0 is a reading, absent is not).
        for task, count in sorted(({name: 0 for name in UNTIL_DONE_TASKS} | dict(retrying)).items()):
            waiting.add_metric([task], count)
        yield waiting
        yield from PipelineCollector._holdout(holdout_rows)

    @staticmethod
    def _holdout(rows):
        """The newest rolling-holdout check of each purchase model (services.analytics.validation)."""
        families = {
            "actual_repeat_purchases": "Repeat purchase days the customers made in the newest rolling holdout",
            "predicted_repeat_purchases": "Repeat purchase days the model predicted for that holdout",
            "relative_error": "(predicted - actual) / actual repeat purchase days in the newest rolling holdout",
            "mae": "Mean absolute error per customer in the newest rolling holdout",
            "rmse": "Root mean squared error per customer in the newest rolling holdout",
            "weeks": "Length of the newest rolling holdout in weeks (from the model's as_of to the check)",
            "customers": "Customers scored in the newest rolling holdout",
            "model_version": "Version of the stored model the newest rolling holdout scored",
        }
        gauges = {name: GaugeMetricFamily(f"pulse_model_holdout_{name}", text, labels=["model"])
                  for name, text in families.items()}
        for row in rows:
            actual = row.actual_repeat_purchases
            values = {
                "actual_repeat_purchases": actual, "predicted_repeat_purchases": row.predicted_repeat_purchases,
                "relative_error": (row.predicted_repeat_purchases - actual) / actual if actual else float("nan"),
                "mae": row.mae, "rmse": row.rmse, "weeks": row.weeks, "customers": row.customers,
                "model_version": row.model_version,
            }
            for name, value in values.items():
                gauges[name].add_metric([row.model], value)
        yield from gauges.values()

    @staticmethod
    def _redis():
        totals = counters.read()
        yield CounterMetricFamily("pulse_events_stored", "Events the worker inserted into MongoDB",
                                  value=totals[counters.EVENTS_STORED])
        yield CounterMetricFamily("pulse_events_duplicate", "Events the worker skipped as stored already "
                                  "(a re-sent event_id, a redelivered batch)", value=totals[counters.EVENTS_DUPLICATE])
        lag = ingestion_lag.read()
        yield HistogramMetricFamily(
            "pulse_ingestion_lag_seconds", "Seconds from the API receiving an event to the worker storing and "
            "counting it, per stored event (kept in Redis by every worker process)",
            buckets=[(floatToGoString(bound), count) for bound, count in lag.buckets], sum_value=lag.sum)
        violations = CounterMetricFamily("pulse_tracking_violations", "Custom events that broke the tracking plan, "
                                         "by event type ((unplanned): types with no entry) and action",
                                         labels=["event_type", "action"])
        for label, value in sorted(counters.read_labelled(counters.TRACKING_VIOLATIONS).items()):
            event_type, _, action = label.rpartition("|")
            violations.add_metric([event_type, action], value)
        yield violations
        yield CounterMetricFamily("pulse_segment_messages_refused", "Messages of a Segment /v1 batch that were "
                                  "refused while the rest were accepted (docs/segment.md)",
                                  value=totals[counters.SEGMENT_REFUSED])
        yield CounterMetricFamily("pulse_profiles_rescored", "Profiles the analytics workers computed",
                                  value=rescore.rescored_total())
        yield GaugeMetricFamily("pulse_rescore_queued_users",
                                "Users in the Redis set awaiting the next rescoring drain",
                                value=rescore.pending_count())

    @staticmethod
    def _rabbitmq():
        depth, _ = queue_depths([dead_letter_queue()])[dead_letter_queue()]
        yield GaugeMetricFamily("pulse_dead_letters", "Messages that failed for good, waiting in the dead-letter queue",
                                value=depth)

    @staticmethod
    def _mongodb():
        model = fitted_models.latest(get_database())
        if model is None:
            return
        fitted_at = model["fitted_at"] if model["fitted_at"].tzinfo else model["fitted_at"].replace(tzinfo=UTC)
        yield GaugeMetricFamily("pulse_model_version", "Version of the population models profiles use",
                                value=model["version"])
        yield GaugeMetricFamily("pulse_model_age_seconds", "Seconds since the current models were fitted",
                                value=(datetime.now(UTC) - fitted_at).total_seconds())
        yield GaugeMetricFamily("pulse_model_converged", "Whether both fits of the current models converged (1) or not",
                                value=int(fitted_models.converged(model)))
        yield GaugeMetricFamily("pulse_model_customers", "Customers the current models were fitted on",
                                value=model["n_customers"])


# Each store's families, read at most once a second per process and shared by every scrape meanwhile.
def _listed(read: Callable[[], Iterable[Any]]) -> Callable[[], list[Any]]:
    return lambda: list(read())


_SOURCES: dict[str, SharedRead[list[Any]]] = {
    source: SharedRead(_listed(read))
    for source, read in (("postgres", PipelineCollector._postgres), ("redis", PipelineCollector._redis),
                         ("rabbitmq", PipelineCollector._rabbitmq), ("mongodb", PipelineCollector._mongodb))
}


def _registries(skip: tuple[str, ...] = ()) -> tuple[CollectorRegistry, CollectorRegistry]:
    """This API's own figures (added up over its processes) and the pipeline's, read now."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own = CollectorRegistry()
        multiprocess.MultiProcessCollector(own)
    else:
        own = REGISTRY
    pipeline = CollectorRegistry()
    pipeline.register(PipelineCollector(skip))
    return own, pipeline


def exposition() -> bytes:
    own, pipeline = _registries()
    return generate_latest(own) + generate_latest(pipeline)


def samples(skip: tuple[str, ...] = ()) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a scrape (without the stores in `skip`) by name, for the dashboard's JSON
    (services.api.pipeline)."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for registry in _registries(skip):
        for family in registry.collect():
            for sample in family.samples:
                found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def init_metrics(app: Flask) -> None:
    @app.before_request
    def _route_label() -> None:
        # The route template, not the path: one series per route, whatever the ids.
        rule = request.url_rule
        request.environ[ROUTE] = openapi_path(rule.rule) if rule is not None else UNMATCHED

    def metrics():
        return Response(exposition(), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics, methods=["GET"])
