"""GET /metrics: the documented families, and a signup and an event moving the right counters."""
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures import wait_for
from tests.helpers import finished_job, purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")
METRICS_PAGE = (Path(__file__).resolve().parents[2] / "docs/metrics.md").read_text()
FAMILIES = [
    "pulse_http_requests", "pulse_http_request_duration_seconds", "pulse_profile_cache_requests",
    "pulse_outbox_pending", "pulse_outbox_oldest_pending_age_seconds", "pulse_rescore_pending_users",
    "pulse_rescore_queued_users", "pulse_events_stored", "pulse_events_duplicate", "pulse_profiles_rescored",
    "pulse_dead_letters", "pulse_model_version", "pulse_model_age_seconds", "pulse_model_converged",
    "pulse_model_customers", "pulse_metrics_source_up", "pulse_task_retry_backlog", "pulse_ingestion_lag_seconds",
    "pulse_tracking_violations",
]


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}


def value(families: dict, family: str, sample: str | None = None, **labels) -> float:
    return sum(s.value for s in families[family].samples
               if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items()))


def test_a_signup_and_events_move_the_counters(client, anonymous_client, mongo):
    # Two customers and a fit, so that the model's figures are there too.
    ids = [client.post("/api/users/signup", json=signup_body()).get_json()["id"] for _ in range(2)]
    batch = [purchase(i, 20.0, "Books", timestamp=f"2026-11-0{n}T10:00:00+00:00") for i in ids for n in (1, 2)]
    assert client.post("/api/events/batch", json={"events": batch}).status_code == 202
    wait_for(lambda: mongo.events.count_documents({"user_id": {"$in": ids}}) == 6, what="the events stored")
    assert finished_job(client, client.post("/api/analytics/models/fit", json={}))["status"] == "done"

    before = scrape(anonymous_client)  # no key needed: counts and timings only
    assert [f for f in FAMILIES if f not in before] == []
    assert value(before, "pulse_metrics_source_up", source="postgres") == 1
    assert value(before, "pulse_model_customers") >= 2 and value(before, "pulse_model_converged") in (0, 1)

    body = signup_body()
    user_id = client.post("/api/users/signup", json=body).get_json()["id"]
    event = purchase(user_id, 12.5, "Books")
    assert client.post("/api/events", json=event).status_code == 202
    assert client.post("/api/events", json=event).status_code == 202  # the same event_id again
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id}) == 2, what="signup and event stored")
    wait_for(lambda: value(scrape(anonymous_client), "pulse_events_duplicate", "pulse_events_duplicate_total")
             >= value(before, "pulse_events_duplicate",
                      "pulse_events_duplicate_total") + 1, what="the duplicate counted")
    client.get(f"/api/users/{user_id}/profile")
    wait_for(lambda: client.get(f"/api/users/{user_id}/profile").headers["X-Cache"] == "HIT", what="a cache hit")
    assert client.get("/api/users/999999999/profile").status_code == 404
    after = scrape(anonymous_client)

    def moved(family, sample=None, **labels):
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    assert moved("pulse_http_requests", "pulse_http_requests_total", method="POST", route="/api/users/signup",
                 status="201") == 1
    assert moved("pulse_http_requests", "pulse_http_requests_total", method="POST", route="/api/events",
                 status="202") == 2
    assert moved("pulse_http_requests", "pulse_http_requests_total", route="/api/users/{user_id}/profile",
                 status="404") == 1
    assert moved("pulse_http_request_duration_seconds", "pulse_http_request_duration_seconds_count",
                 route="/api/users/signup") == 1
    assert moved("pulse_events_stored", "pulse_events_stored_total") >= 2  # user_created and the purchase
    assert moved("pulse_events_duplicate", "pulse_events_duplicate_total") >= 1
    assert moved("pulse_profile_cache_requests", "pulse_profile_cache_requests_total", result="hits") >= 1
    assert moved("pulse_profile_cache_requests", "pulse_profile_cache_requests_total", result="misses") >= 1
    # The fast path (a cache hit answered before Flask) is counted under the same route.
    assert moved("pulse_http_requests", "pulse_http_requests_total", route="/api/users/{user_id}/profile",
                 status="200") >= 2
    # Routes are templates: no id is ever a label.
    routes = {s.labels["route"] for s in after["pulse_http_requests"].samples}
    # (Segment's API lives under /v1: its version is no id.)
    assert routes and not any(re.search(r"\d", route.removeprefix("/v1/")) for route in routes), routes


def lag(families: dict) -> dict:
    """The ingestion lag histogram of a scrape: cumulative bucket counts by `le`, the sum, the count."""
    samples = families["pulse_ingestion_lag_seconds"].samples
    buckets = {s.labels["le"]: s.value for s in samples if s.name == "pulse_ingestion_lag_seconds_bucket"}
    [total] = [s.value for s in samples if s.name == "pulse_ingestion_lag_seconds_sum"]
    [count] = [s.value for s in samples if s.name == "pulse_ingestion_lag_seconds_count"]
    return {"buckets": buckets, "sum": total, "count": count,
            "stored": value(families, "pulse_events_stored", "pulse_events_stored_total")}


def test_the_ingestion_lag_histogram_counts_every_stored_event(client, anonymous_client, mongo):
    before = lag(scrape(anonymous_client))
    assert list(before["buckets"]) == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0",
                                       "10.0", "30.0", "60.0", "+Inf"]
    user_id = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
    events = [purchase(user_id, 5.0 + i, "Books") for i in range(10)]
    sent = datetime.now(UTC)
    assert client.post("/api/events/batch", json={"events": events}).status_code == 202
    answered = datetime.now(UTC)
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id}) == 11, what="the signup and 10 events")
    # The time the API received them is what the document keeps (the same instant for the batch).
    received = {doc["received_at"] for doc in mongo.events.find({"user_id": user_id, "event_type": "user_purchase"})}
    assert len(received) == 1 and sent - timedelta(milliseconds=1) <= received.pop() <= answered

    def grown():
        now = lag(scrape(anonymous_client))
        # Every stored event is measured once: the count grows exactly as pulse_events_stored does
        # (read in the same scrape), by this test's 11 at least (other modules' batches may land too).
        moved = now["count"] - before["count"]
        return moved == now["stored"] - before["stored"] and moved >= 11 and now

    after = wait_for(grown, what="the 11 stored events measured")
    assert after["buckets"]["+Inf"] == after["count"]
    counts = list(after["buckets"].values())
    assert counts == sorted(counts)  # cumulative
    assert after["sum"] > before["sum"]
    # Lags are seconds of a running pipeline, not hours: a clock mix-up would land beyond a minute.
    assert after["buckets"]["60.0"] - before["buckets"]["60.0"] == after["count"] - before["count"]


def test_the_metrics_page_lists_every_family():
    for family in FAMILIES:
        assert f"`{family}" in METRICS_PAGE, family
