"""Custom events and the tracking plan over HTTP, through the real worker into MongoDB."""
import os
import time
import uuid

import pytest
import requests

from shared.contracts.settings import get_settings
from tests.fixtures import wait_for
from tests.helpers import purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")

VIDEO_SCHEMA = {
    "type": "object",
    "required": ["video_id", "seconds"],
    "properties": {"video_id": {"type": "string"}, "seconds": {"type": "number", "minimum": 0},
                   "chapters": {"type": "array", "items": {"type": "object",
                                                           "properties": {"at": {"type": "integer"}}}}},
}


@pytest.fixture()
def user_id(client):
    return client.post("/api/users/signup", json=signup_body()).get_json()["id"]


@pytest.fixture()
def event_type():
    return f"video_{uuid.uuid4().hex[:10]}"


def custom(user_id, event_type, metadata, **extra):
    return {"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": event_type, "metadata": metadata, **extra}


def put(client, name, schema, on_violation="refuse"):
    return client.put(f"/api/tracking-plan/event-types/{name}", json={"schema": schema, "on_violation": on_violation})


def stored(mongo, event_ids):
    return mongo.events.count_documents({"event_id": {"$in": list(event_ids)}})


def flush(client, mongo, user_id):
    """Wait until what was published before is stored: a marker sent after it, then stored."""
    marker = purchase(user_id, 1.0, "books")
    assert client.post("/api/events", json=marker).status_code == 202
    wait_for(lambda: stored(mongo, [marker["event_id"]]) == 1, what="marker event")


def counted(client, line):
    # /metrics reads each store at most once a second (services.api.shared_reads).
    wait_for(lambda: line in client.get("/metrics").get_data(as_text=True), timeout=10, what=line)


def violations_of(client, name):
    response = client.get("/api/tracking-plan/violations")
    assert response.status_code == 200
    return {v["reason"]: v for v in response.get_json()["items"] if v["event_type"] == name}


def test_a_custom_event_without_a_plan_entry_is_stored(client, mongo, user_id, event_type):
    metadata = {"video_id": "v1", "seconds": 12.5, "player": {"size": {"w": 640, "h": 360}}, "tags": ["a", "b"]}
    event = custom(user_id, event_type, metadata)
    response = client.post("/api/events", json=event)
    assert response.status_code == 202, response.get_json()
    doc = wait_for(lambda: mongo.events.find_one({"event_id": event["event_id"]}), what="custom event stored")
    assert doc["event_type"] == event_type and doc["metadata"] == metadata and "violations" not in doc
    # Without metadata too: an empty object.
    bare = {"user_id": user_id, "event_type": event_type}
    event_id = client.post("/api/events", json=bare).get_json()["event_id"]
    assert wait_for(lambda: mongo.events.find_one({"event_id": event_id}), what="bare event")["metadata"] == {}


def test_a_refused_event_names_each_field_and_nothing_of_the_request_is_stored(client, mongo, user_id, event_type):
    created = put(client, event_type, VIDEO_SCHEMA)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["version"] == 1 and created.get_json()["read_only"] is False
    good = purchase(user_id, 5.0, "toys")
    ok = custom(user_id, event_type, {"video_id": "v1", "seconds": 3})
    bad = custom(user_id, event_type, {"seconds": "ten", "chapters": [{"at": 1}, {"at": "x"}]})
    response = client.post("/api/events/batch", json={"events": [good, ok, bad]})
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    fields = sorted(e["field"] for e in response.get_json()["errors"])
    assert fields == ["events[2].metadata.chapters[1].at", "events[2].metadata.seconds", "events[2].metadata.video_id"]
    single = client.post("/api/events", json=bad)
    assert single.status_code == 422
    assert sorted(e["field"] for e in single.get_json()["errors"]) == [
        "metadata.chapters[1].at", "metadata.seconds", "metadata.video_id"]
    flush(client, mongo, user_id)
    assert stored(mongo, [good["event_id"], ok["event_id"], bad["event_id"]]) == 0
    listed = violations_of(client, event_type)
    assert set(listed) == {"metadata.seconds: type", "metadata.video_id: required", "metadata.chapters[*].at: type"}
    assert listed["metadata.seconds: type"]["refused"] == 2 and listed["metadata.seconds: type"]["flagged"] == 0
    assert listed["metadata.seconds: type"]["count"] == 2
    assert listed["metadata.seconds: type"]["example"]["event_id"] == bad["event_id"]
    # The events that keep to the schema are stored.
    assert client.post("/api/events/batch", json={"events": [good, ok]}).status_code == 202
    wait_for(lambda: stored(mongo, [good["event_id"], ok["event_id"]]) == 2, what="the good events")


def test_a_flagged_event_is_stored_with_its_violations_and_listed(client, mongo, user_id, event_type):
    assert put(client, event_type, VIDEO_SCHEMA, "flag").status_code == 201
    bad = custom(user_id, event_type, {"video_id": 7, "seconds": -1})
    response = client.post("/api/events/batch", json={"events": [bad, bad]})  # a copy: collapsed, counted once
    assert response.status_code == 202 and response.get_json()["duplicates"] == 1
    doc = wait_for(lambda: mongo.events.find_one({"event_id": bad["event_id"]}), what="flagged event stored")
    assert doc["metadata"] == {"video_id": 7, "seconds": -1}
    assert sorted(v.split(":")[0] for v in doc["violations"]) == ["metadata.seconds", "metadata.video_id"]
    listed = violations_of(client, event_type)
    assert listed["metadata.video_id: type"]["flagged"] == 1 and listed["metadata.video_id: type"]["count"] == 1
    example = listed["metadata.seconds: minimum"]["example"]
    assert example["event_id"] == bad["event_id"] and example["field"] == "metadata.seconds"
    assert listed["metadata.seconds: minimum"]["last_seen"] >= listed["metadata.seconds: minimum"]["first_seen"]
    # Violations, not events: the one event broke two rules.
    counted(client, f'pulse_tracking_violations_total{{action="flagged",event_type="{event_type}"}} 2.0')
    # Switched to refuse: the same kind of event is refused from now on (this process sees its own change at once).
    changed = put(client, event_type, VIDEO_SCHEMA, "refuse")
    assert changed.status_code == 200 and changed.get_json()["version"] == 2
    again = custom(user_id, event_type, {"video_id": 7, "seconds": 1})
    assert client.post("/api/events", json=again).status_code == 422
    counted(client, f'pulse_tracking_violations_total{{action="refused",event_type="{event_type}"}} 1.0')


def test_the_entry_is_read_listed_and_deleted(client, mongo, user_id, event_type):
    assert client.get(f"/api/tracking-plan/event-types/{event_type}").status_code == 404
    put(client, event_type, VIDEO_SCHEMA)
    entry = client.get(f"/api/tracking-plan/event-types/{event_type}").get_json()
    assert entry["schema"] == VIDEO_SCHEMA and entry["on_violation"] == "refuse" and entry["read_only"] is False
    plan = client.get("/api/tracking-plan").get_json()
    names = [item["event_type"] for item in plan["items"]]
    assert names[:6] == ["user_purchase", "add_to_cart", "page_view", "login", "logout", "search"]
    assert event_type in names and plan["unplanned"] == "accept"
    assert client.delete(f"/api/tracking-plan/event-types/{event_type}").status_code == 204
    assert client.delete(f"/api/tracking-plan/event-types/{event_type}").status_code == 404
    # No entry now: TRACKING_PLAN_UNPLANNED (accept) decides.
    event = custom(user_id, event_type, {"seconds": "ten"})
    assert client.post("/api/events", json=event).status_code == 202
    wait_for(lambda: stored(mongo, [event["event_id"]]) == 1, what="the unplanned event")


@pytest.mark.parametrize("name", ["user_purchase", "page_view", "search"])
def test_built_in_types_are_read_only_entries(client, name):
    entry = client.get(f"/api/tracking-plan/event-types/{name}")
    assert entry.status_code == 200
    assert entry.get_json()["read_only"] is True and entry.get_json()["on_violation"] == "refuse"
    assert entry.get_json()["schema"]["type"] == "object"
    assert put(client, name, {"type": "object"}).status_code == 409
    assert client.delete(f"/api/tracking-plan/event-types/{name}").status_code == 409


@pytest.mark.parametrize("schema, field", [
    ({"type": "nope"}, "schema.type"),
    ({"properties": {"price": {"minimum": "zero"}}}, "schema.properties.price.minimum"),
    ({"required": "price"}, "schema.required"),
    ({"$schema": "http://json-schema.org/draft-04/schema#"}, "schema.$schema"),
    # Never fetched: a schema is self-contained.
    ({"$ref": "http://169.254.169.254/latest/meta-data"}, "schema"),
    # Look-around and back-references need a backtracking engine: refused.
    ({"properties": {"a": {"type": "string", "pattern": "^(?=a)a+$"}}}, "schema.properties.a.pattern"),
    ({"properties": {"a": {"type": "string", "pattern": "^(a)\\1$"}}}, "schema.properties.a.pattern"),
    ({"properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(1000)}}, "schema"),
])
def test_a_bad_schema_is_422_naming_where(client, event_type, schema, field):
    response = put(client, event_type, schema)
    assert response.status_code == 422, response.get_json()
    assert [e["field"] for e in response.get_json()["errors"]] == [field]
    assert client.get(f"/api/tracking-plan/event-types/{event_type}").status_code == 404


def test_a_deeply_nested_schema_is_refused(client, event_type):
    schema: dict = {"type": "object"}
    for _ in range(12):  # 25 levels: within what the API parses (32), past what a schema may nest (20)
        schema = {"type": "object", "properties": {"a": schema}}
    response = put(client, event_type, schema)
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "schema"


@pytest.mark.parametrize("body, field", [
    ({"on_violation": "refuse"}, "schema"),
    ({"schema": [], "on_violation": "refuse"}, "schema"),
    ({"schema": {}, "on_violation": "ignore"}, "on_violation"),
])
def test_a_bad_entry_request_names_the_field(client, event_type, body, field):
    response = client.put(f"/api/tracking-plan/event-types/{event_type}", json=body)
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == field


def test_a_pathological_pattern_cannot_make_validation_backtrack(client, mongo, user_id, event_type):
    # ^(a+)+$ backtracks exponentially on a backtracking engine; on the regex crate's it is linear.
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"},
                                               "t": {"$ref": "#"}}}  # recursive too
    assert put(client, event_type, schema).status_code == 201
    nested = {"s": "a" * 30_000 + "!", "t": {"t": {"t": {"s": "a" * 1000 + "!"}}}}
    started = time.monotonic()
    response = client.post("/api/events", json=custom(user_id, event_type, nested))
    assert time.monotonic() - started < 2.0
    assert response.status_code == 422
    assert sorted(e["field"] for e in response.get_json()["errors"]) == ["metadata.s", "metadata.t.t.t.s"]


@pytest.mark.parametrize("metadata, field", [
    ({"$where": "sleep(1000)"}, "metadata"),
    ({"a": {"$gt": 1}}, "metadata"),
    ({"a.b": 1}, "metadata"),
    ({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, "metadata"),  # 6 levels
    ({"n": 2**64}, "metadata"),
    ({"blob": "x" * 40_000}, "metadata"),
    ([1, 2], "metadata"),
])
def test_metadata_no_store_should_hold_is_refused(client, mongo, user_id, event_type, metadata, field):
    event = custom(user_id, event_type, metadata)
    response = client.post("/api/events/batch", json={"events": [event]})
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["errors"][0]["field"] == f"events[0].{field}"
    flush(client, mongo, user_id)
    assert stored(mongo, [event["event_id"]]) == 0


def test_unplanned_types_follow_the_setting(client, mongo, user_id, event_type, monkeypatch):
    monkeypatch.setattr(get_settings(), "tracking_plan_unplanned", "refuse")
    refused = client.post("/api/events/batch", json={"events": [purchase(user_id, 2.0, "x"),
                                                                custom(user_id, event_type, {})]})
    assert refused.status_code == 422 and refused.get_json()["errors"][0]["field"] == "events[1].event_type"
    monkeypatch.setattr(get_settings(), "tracking_plan_unplanned", "flag")
    event = custom(user_id, event_type, {"k": 1})
    assert client.post("/api/events", json=event).status_code == 202
    doc = wait_for(lambda: mongo.events.find_one({"event_id": event["event_id"]}), what="flagged unplanned event")
    assert doc["violations"] == [f"event_type: {event_type!r} has no tracking-plan entry (TRACKING_PLAN_UNPLANNED)"]
    listed = violations_of(client, event_type)["event_type: no tracking-plan entry"]
    assert listed["refused"] == 1 and listed["flagged"] == 1
    counted(client, 'pulse_tracking_violations_total{action="flagged",event_type="(unplanned)"}')


def test_erasure_clears_the_examples_of_the_person(client, mongo, user_id, event_type):
    assert put(client, event_type, VIDEO_SCHEMA, "flag").status_code == 201
    event = custom(user_id, event_type, {"video_id": "v1", "seconds": "secret value"})
    assert client.post("/api/events", json=event).status_code == 202
    assert violations_of(client, event_type)["metadata.seconds: type"]["example"]["event_id"] == event["event_id"]
    assert client.delete(f"/api/users/{user_id}").status_code == 202
    listed = violations_of(client, event_type)["metadata.seconds: type"]
    assert listed["example"] is None and listed["count"] == 1  # the count stays: it names no one
    wait_for(lambda: stored(mongo, [event["event_id"]]) == 0, what="the erased person's events gone")


def test_another_api_process_sees_a_change_within_seconds(client, api, user_id, event_type):
    headers = {"Authorization": f"Bearer {os.environ['PULSE_API_KEY']}"}
    bad = {"user_id": user_id, "event_type": event_type, "metadata": {"seconds": "ten"}}

    def status():
        return requests.post(f"{api}/api/events", json={**bad, "event_id": uuid.uuid4().hex}, headers=headers,
                             timeout=10).status_code

    assert status() == 202  # no entry yet: accepted, and the other process has read the (empty) plan
    assert put(client, event_type, VIDEO_SCHEMA).status_code == 201  # through this process
    changed = time.monotonic()
    wait_for(lambda: status() == 422, timeout=30, interval=0.2, what="the other process to refuse")
    assert time.monotonic() - changed < get_settings().tracking_plan_refresh_seconds + 3
    assert client.delete(f"/api/tracking-plan/event-types/{event_type}").status_code == 204
    wait_for(lambda: status() == 202, timeout=30, interval=0.2, what="the other process to accept again")
