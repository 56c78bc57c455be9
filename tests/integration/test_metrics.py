"""GET /metrics: the documented families, and a signup and an event moving the right counters."""
import re
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
    "pulse_model_customers", "pulse_metrics_source_up", "pulse_task_retry_backlog", "pulse_tracking_violations",
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
    assert routes and not any(re.search(r"\d", route) for route in routes), routes


def test_the_metrics_page_lists_every_family():
    for family in FAMILIES:
        assert f"`{family}" in METRICS_PAGE, family
