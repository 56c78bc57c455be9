"""`GET /api/pipeline`: the pipeline's figures now, as JSON, for the dashboard.

The same numbers `GET /metrics` exposes (services.api.metrics: this API's counters added up over
its processes, the stores read at scrape time), plus the depth of every queue. Totals only: the
dashboard turns two readings into rates, as Prometheus' rate() does. A figure whose store did not
answer is null, and `sources` says which store that was.
"""
from typing import Any

from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from services.api import metrics
from shared.contracts.settings import get_settings
from shared.contracts.topology import ERASE_USER, STORE_EVENTS, USER_CREATED, build_topology

pipeline_bp = APIBlueprint("pipeline", __name__, url_prefix="/api", abp_tags=[Tag(name="pipeline")])
SIGNUP_ROUTE = "/api/users/signup"
EVENT_ROUTES = ("/api/events", "/api/events/batch")


class QueueOut(BaseModel):
    name: str
    messages: int | None = Field(description="Messages ready for delivery (not those a worker holds "
                                 "unacknowledged); null when RabbitMQ did not answer")
    consumers: int | None


class LagBucketOut(BaseModel):
    le: str = Field(description='Upper bound in seconds ("+Inf" last), as Prometheus\' `le`')
    count: float = Field(description="Events with at most that lag (cumulative)")


class IngestionLagOut(BaseModel):
    count: float = Field(description="Events measured (those stored and counted since Redis started)")
    sum: float = Field(description="Their lags added up, seconds")
    buckets: list[LagBucketOut]


class PipelineOut(BaseModel):
    signups_total: float | None = Field(description="Signups this API answered 201 since it started (null with "
                                        "METRICS_ENABLED=false)")
    event_requests_total: float | None = Field(description="Event requests (single or batch) answered 202")
    events_stored_total: float | None = Field(description="Events the workers inserted into MongoDB")
    events_duplicate_total: float | None = Field(description="Events skipped as stored already")
    profiles_rescored_total: float | None
    ingestion_lag: IngestionLagOut | None = Field(
        description="The ingestion lag histogram (`pulse_ingestion_lag_seconds`): received by the API → stored "
        "and counted by the worker; null when Redis did not answer")
    outbox_pending: float | None
    outbox_oldest_pending_age_seconds: float | None
    rescore_pending_users: float | None = Field(description="Users awaiting a rescoring (Postgres, durable)")
    rescore_queued_users: float | None = Field(description="Users in Redis awaiting the next drain")
    dead_letters: float | None
    retry_backlog: dict[str, float] | None = Field(
        description="Tasks whose retry is queued while a store is down, by kind: event batches (`events`), "
        "erasures (`erasures`), signups (`signups`), anything else (`other`); null when Postgres did not answer")
    profile_cache: dict[str, float] = Field(description="Profile reads by what the cache did: hits, misses "
                                            "(of which waited or computed), bypassed (Redis unreachable)")
    model_version: float | None
    model_age_seconds: float | None
    queues: list[QueueOut]
    sources: dict[str, bool] = Field(description="Whether each store answered")


def _total(found: dict[str, Any], name: str, **labels: str) -> float | None:
    values = [value for sample_labels, value in found.get(name, ())
              if all(sample_labels.get(k) == v for k, v in labels.items())]
    return sum(values) if values else None


def _lag(found: dict[str, Any]) -> dict[str, Any] | None:
    name = "pulse_ingestion_lag_seconds"
    if f"{name}_count" not in found:
        return None
    return {"count": _total(found, f"{name}_count"), "sum": _total(found, f"{name}_sum"),
            "buckets": [{"le": labels["le"], "count": value} for labels, value in found.get(f"{name}_bucket", ())]}


def _requests(found: dict[str, Any], routes: tuple[str, ...], status: str) -> float | None:
    if "pulse_http_requests_total" not in found:
        return None  # metrics off: nothing counted, which is not zero
    return sum(value for labels, value in found["pulse_http_requests_total"]
               if labels.get("route") in routes and labels.get("status") == status)


_BACKLOG_KINDS = {STORE_EVENTS: "events", ERASE_USER: "erasures", USER_CREATED: "signups"}


def _retry_backlog(found: dict[str, Any]) -> dict[str, float] | None:
    if "pulse_task_retry_backlog" not in found:
        return None
    kinds = dict.fromkeys((*_BACKLOG_KINDS.values(), "other"), 0.0)
    for labels, value in found["pulse_task_retry_backlog"]:
        kinds[_BACKLOG_KINDS.get(labels.get("task"), "other")] += value
    return kinds


def _queues() -> list[dict[str, Any]]:
    topology = build_topology(get_settings().queue_prefix, get_settings().queue_type)
    names = [queue.name for queue in topology.all_queues]
    try:
        depths = metrics.queue_depths(names)
    except Exception:  # RabbitMQ down: the other figures still answer
        return [{"name": name, "messages": None, "consumers": None} for name in names]
    return [{"name": name, "messages": messages, "consumers": consumers}
            for name, (messages, consumers) in depths.items()]


@pipeline_bp.get("/pipeline", summary="The pipeline's figures now (the dashboard's live view)",
                 responses={200: PipelineOut})
def pipeline():
    # RabbitMQ once, for every queue (the dead letters among them), not again in the scrape.
    queues = _queues()
    found = metrics.samples(skip=("rabbitmq",))
    sources = {labels["source"]: bool(value) for labels, value in found.get("pulse_metrics_source_up", ())}
    sources["rabbitmq"] = queues[0]["messages"] is not None
    cache = {labels["result"]: value for labels, value in found.get("pulse_profile_cache_requests_total", ())}
    return {
        "signups_total": _requests(found, (SIGNUP_ROUTE,), "201"),
        "event_requests_total": _requests(found, EVENT_ROUTES, "202"),
        "events_stored_total": _total(found, "pulse_events_stored_total"),
        "events_duplicate_total": _total(found, "pulse_events_duplicate_total"),
        "profiles_rescored_total": _total(found, "pulse_profiles_rescored_total"),
        "ingestion_lag": _lag(found),
        "outbox_pending": _total(found, "pulse_outbox_pending"),
        "outbox_oldest_pending_age_seconds": _total(found, "pulse_outbox_oldest_pending_age_seconds"),
        "rescore_pending_users": _total(found, "pulse_rescore_pending_users", store="postgres"),
        "rescore_queued_users": _total(found, "pulse_rescore_queued_users"),
        "dead_letters": next(q["messages"] for q in queues if q["name"] == metrics.dead_letter_queue()),
        "retry_backlog": _retry_backlog(found),
        "profile_cache": cache,
        "model_version": _total(found, "pulse_model_version"),
        "model_age_seconds": _total(found, "pulse_model_age_seconds"),
        "queues": queues,
        "sources": sources,
    }
