"""Attacks on the promises of issue 23 (docs/api.md "Anonymous visitors and identify", "Client
clocks"; docs/segment.md): what a careless client or an attacker sends, over HTTP against a real
API server process and the run's real workers and stores. Every refusal is a 4xx naming its field,
never a 500; whatever was accepted is stored and counted exactly once."""
from __future__ import annotations

import os
import threading
import uuid

import pytest
import requests
from sqlalchemy import text

from shared.infra.db import session_scope
from tests.fixtures import wait_for
from tests.helpers import signup_body


@pytest.fixture(scope="module")
def http(api, pipeline):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {os.environ['PULSE_API_KEY']}"
    session.base = api
    yield session
    session.close()


def post(http, path: str, body: dict, **kwargs) -> requests.Response:
    return http.post(f"{http.base}{path}", json=body, timeout=60, **kwargs)


def fields(answer: requests.Response) -> set[str]:
    return {problem["field"] for problem in answer.json().get("errors", [])}


def signed_up(http) -> int:
    answer = post(http, "/api/users/signup", signup_body())
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


# --------------------------------------------------------------------------- client clocks

# Instants at the ends of what Python's datetime holds: moving them to UTC, or by a sent_at
# millennia away, leaves the calendar. Each must be a 422 naming the field, never a 500.
EDGE_TIMESTAMPS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


@pytest.mark.parametrize("timestamp", EDGE_TIMESTAMPS)
def test_a_timestamp_off_the_calendar_in_utc_is_a_422(http, timestamp):
    one = post(http, "/api/events", {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": timestamp})
    assert one.status_code == 422, one.text
    assert "timestamp" in fields(one)
    batch = post(http, "/api/events/batch", {"events": [
        {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": timestamp}]})
    assert batch.status_code == 422, batch.text
    assert "events[0].timestamp" in fields(batch)


@pytest.mark.parametrize("sent_at", EDGE_TIMESTAMPS)
def test_a_sent_at_off_the_calendar_in_utc_is_a_422(http, sent_at):
    answer = post(http, "/api/events/batch", {"sent_at": sent_at, "events": [
        {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": "2026-01-01T00:00:00Z"}]})
    assert answer.status_code == 422, answer.text
    assert "sent_at" in fields(answer)


@pytest.mark.parametrize(("sent_at", "timestamp"), [
    ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),  # corrected beyond year 9999
    ("9999-12-31T00:00:00Z", "1970-01-02T00:00:00Z"),  # corrected before year 1
])
def test_a_sent_at_millennia_from_the_timestamp_is_a_422(http, sent_at, timestamp):
    answer = post(http, "/api/events/batch", {"sent_at": sent_at, "events": [
        {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": timestamp}]})
    assert answer.status_code == 422, answer.text
    assert "events[0].timestamp" in fields(answer)


@pytest.mark.parametrize("timestamp", EDGE_TIMESTAMPS)
def test_segment_a_timestamp_off_the_calendar_is_refused_naming_it(http, timestamp):
    answer = post(http, "/v1/track", {"anonymousId": "seg-clock", "event": "Clock Edge", "timestamp": timestamp})
    assert 400 <= answer.status_code < 500, answer.text
    assert any("timestamp" in f for f in fields(answer)), answer.text
    batch = post(http, "/v1/batch", {"batch": [
        {"type": "track", "anonymousId": "seg-clock", "event": "Clock Edge", "timestamp": timestamp}]})
    # A batch answers 200 with what it refused (docs/segment.md): the rest of the batch is kept.
    assert batch.status_code == 200, batch.text
    assert [r["field"] for r in batch.json()["refused"]] == ["batch[0].timestamp"]
