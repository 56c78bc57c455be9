"""Segment's HTTP tracking API, driven by the SDKs people use, unchanged: segment-analytics-python
and rudder-sdk-python from PyPI, and analytics.js (@segment/analytics-next, vendored in
tests/data/analytics-next) in headless chromium. Each points its host at an API process of this
module's own with an ingest key as its write key; the events are read back from MongoDB and the
profile, as the pipeline stored them.
"""
import hashlib
import http.server
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import rudderstack.analytics.client as rudder_client
from rudderstack.analytics.request import APIError as RudderAPIError
from segment.analytics.client import Client as SegmentClient
from segment.analytics.request import APIError as SegmentAPIError

from services.api.segment import anonymous_visitors
from shared.infra import api_keys
from shared.infra.db import session_scope
from tests.fixtures import keyed_client, wait_for
from tests.helpers import signup_body

pytestmark = pytest.mark.usefixtures("pipeline")
ANALYTICS_JS = Path(__file__).resolve().parents[1] / "data" / "analytics-next" / "analytics-next-1.84.3.umd.js"
ANALYTICS_JS_SHA256 = "e0bed4badf9ec12029a63ef13f22acb9d26d7c7b38d721da8e4e552e7bd33088"
NEEDS_VISITORS = pytest.mark.skipif(not anonymous_visitors(), reason="needs anonymous visitors (helper A)")


@pytest.fixture(scope="module")
def client(app):
    return keyed_client(app)


@pytest.fixture(scope="module")
def write_key(services) -> str:
    """An API key with the ingest scope only: what a site would put in its SDK's configuration."""
    with session_scope() as session:
        _, key = api_keys.create(session, ["ingest"], name="segment sdk")
    return key


def signed_up(client) -> int:
    response = client.post("/api/users/signup", json=signup_body())
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def stored(mongo, user_id: int, event_id: str) -> list[dict]:
    return list(mongo["events"].find({"user_id": user_id, "event_id": event_id}))


def wait_stored(mongo, user_id: int, *event_ids: str) -> dict[str, dict]:
    def found():
        documents = {d["event_id"]: d for d in mongo["events"].find({"user_id": user_id,
                                                                      "event_id": {"$in": list(event_ids)}})}
        return documents if len(documents) == len(event_ids) else None

    return wait_for(found, timeout=60, what=f"events {event_ids} of user {user_id} stored")


class Errors:
    """An SDK's on_error: what it was told went wrong."""

    def __init__(self) -> None:
        self.seen: list[tuple[Exception, list]] = []

    def __call__(self, error, batch) -> None:
        self.seen.append((error, batch))


def segment(api: str, key: str, errors: Errors, **options) -> SegmentClient:
    options = {"sync_mode": True, "max_retries": 1, **options}
    return SegmentClient(write_key=key, host=api, on_error=errors, **options)


def test_segment_python_sdk_tracks_and_pages_a_user_into_events_and_profile(api, client, write_key, mongo):
    user_id = signed_up(client)
    errors = Errors()
    sdk = segment(api, write_key, errors)
    purchase, cart, page = (str(uuid.uuid4()) for _ in range(3))
    bought_at = datetime.now(UTC) - timedelta(hours=2)
    sdk.track(user_id=str(user_id), event="user_purchase", message_id=purchase, timestamp=bought_at,
              properties={"product_id": "sku-1", "price": 42.5, "category": "Books"})
    sdk.track(user_id=str(user_id), event="Add To Cart", message_id=cart, properties={"product_id": "sku-2"})
    sdk.page(user_id=str(user_id), name="Pricing", message_id=page,
             properties={"url": "https://shop.example/pricing?x=1", "path": "/pricing", "title": "Pricing"},
             context={"ip": "203.0.113.9", "userAgent": "Mozilla/5.0"})
    sdk.flush()
    assert errors.seen == []
    documents = wait_stored(mongo, user_id, purchase, cart, page)
    assert documents[purchase]["event_type"] == "user_purchase"
    assert documents[purchase]["metadata"] == {"product_id": "sku-1", "price": 42.5, "category": "Books"}
    # Segment's clock rule: the SDK's own sentAt and timestamp were the same clock, seconds apart.
    assert abs(documents[purchase]["timestamp"].replace(tzinfo=UTC) - bought_at) < timedelta(seconds=30)
    assert documents[cart]["event_type"] == "add_to_cart"
    assert documents[page]["event_type"] == "page_view"
    assert documents[page]["metadata"] == {"name": "Pricing", "url": "https://shop.example/pricing?x=1",
                                           "path": "/pricing", "title": "Pricing"}
    assert "203.0.113.9" not in str(documents.values()) and "Mozilla" not in str(documents.values())

    def profile_counts_the_purchase():
        profile = client.get(f"/api/users/{user_id}/profile").get_json()
        return profile if profile["totals"]["purchases"] == 1 else None

    profile = wait_for(profile_counts_the_purchase, timeout=60, what="the profile counting the SDK's purchase")
    assert profile["totals"]["total_spent"] == 42.5


def test_an_sdk_whose_clock_runs_ahead_is_corrected_and_its_stated_time_kept(api, client, write_key, mongo,
                                                                            monkeypatch):
    # The SDK's machine runs two days fast: its timestamp and the sentAt it stamps on the batch
    # (segment.analytics.request, by that clock) both say so.
    import segment.analytics.request as sdk_request

    ahead = timedelta(days=2)

    class FastClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + ahead

    monkeypatch.setattr(sdk_request, "datetime", FastClock)
    user_id = signed_up(client)
    errors = Errors()
    stated = datetime.now(UTC) + ahead - timedelta(minutes=5)
    message_id = str(uuid.uuid4())
    segment(api, write_key, errors).track(user_id=str(user_id), event="search", message_id=message_id,
                                          timestamp=stated, properties={"query": "socks"})
    assert errors.seen == []
    document = wait_stored(mongo, user_id, message_id)[message_id]
    corrected = document["timestamp"].replace(tzinfo=UTC)
    assert abs(corrected - (datetime.now(UTC) - timedelta(minutes=5))) < timedelta(seconds=30)
    assert abs(document["original_timestamp"].replace(tzinfo=UTC) - stated) < timedelta(milliseconds=1)


def test_redelivered_message_ids_store_nothing_twice(api, client, write_key, mongo):
    user_id = signed_up(client)
    errors = Errors()
    sdk = segment(api, write_key, errors, sync_mode=False, upload_size=100)
    again = str(uuid.uuid4())
    for _ in range(3):  # three copies in one batch
        sdk.track(user_id=user_id, event="search", message_id=again, properties={"query": "socks"})
    sdk.flush()
    sdk.track(user_id=user_id, event="search", message_id=again, properties={"query": "socks"})  # a later batch
    sentinel = str(uuid.uuid4())
    sdk.track(user_id=user_id, event="search", message_id=sentinel, properties={"query": "after"})
    sdk.flush()
    sdk.join()
    assert errors.seen == []
    wait_stored(mongo, user_id, again, sentinel)
    assert len(stored(mongo, user_id, again)) == 1
    # Another user's message with the same messageId is another event (an event is (user_id, event_id)).
    other = signed_up(client)
    segment(api, write_key, errors).track(user_id=other, event="search", message_id=again)
    wait_stored(mongo, other, again)
    assert len(stored(mongo, user_id, again)) == 1 and len(stored(mongo, other, again)) == 1


def test_a_wrong_write_key_is_a_401_the_sdk_sees_and_nothing_is_stored(api, client, write_key, mongo):
    user_id = signed_up(client)
    wrong = "pulse_000000000000_" + "A" * 43
    lost = str(uuid.uuid4())
    # In sync mode the SDK raises what its batch mode hands to on_error.
    with pytest.raises(SegmentAPIError) as refused:
        segment(api, wrong, Errors()).track(user_id=str(user_id), event="search", message_id=lost)
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    errors = Errors()
    batching = segment(api, wrong, errors, sync_mode=False, max_retries=0)
    batching.track(user_id=str(user_id), event="search", message_id=lost)
    batching.flush()
    batching.join()
    assert [getattr(error, "status", None) for error, _ in errors.seen] == [401]
    # A read key is not an ingest key either.
    with session_scope() as session:
        _, read_key = api_keys.create(session, ["read"], name="reader")
    with pytest.raises(SegmentAPIError) as refused:
        segment(api, read_key, Errors()).track(user_id=str(user_id), event="search", message_id=lost)
    assert refused.value.status == 403
    sentinel = str(uuid.uuid4())
    segment(api, write_key, Errors()).track(user_id=str(user_id), event="search", message_id=sentinel)
    wait_stored(mongo, user_id, sentinel)
    assert stored(mongo, user_id, lost) == []


def test_a_batch_with_bad_messages_stores_the_others_and_answers_200(api, client, write_key, mongo):
    user_id = signed_up(client)
    errors = Errors()
    sdk = segment(api, write_key, errors, sync_mode=False, upload_size=100)
    good, bad_user, no_user, bad_price, good_too = (str(uuid.uuid4()) for _ in range(5))
    sdk.track(user_id=str(user_id), event="search", message_id=good, properties={"query": "a"})
    sdk.track(user_id="alice@example.com", event="search", message_id=bad_user)
    sdk.track(user_id="2147483000", event="search", message_id=no_user)  # digits, but no such user
    sdk.track(user_id=str(user_id), event="user_purchase", message_id=bad_price,
              properties={"product_id": "x", "price": -1, "category": "Books"})
    sdk.track(user_id=str(user_id), event="login", message_id=good_too)
    sdk.flush()
    sdk.join()
    assert errors.seen == []  # 200: the SDK does not retry the batch
    wait_stored(mongo, user_id, good, good_too)
    assert stored(mongo, user_id, bad_price) == []
    assert mongo["events"].count_documents({"event_id": {"$in": [bad_user, no_user]}}) == 0
    # The answer names each refused message (the SDK ignores it; a person debugging reads it).
    answer = requests.post(f"{api}/v1/batch", auth=(write_key, ""), timeout=10, json={"batch": [
        {"type": "track", "userId": user_id, "event": "search", "messageId": str(uuid.uuid4())},
        {"type": "track", "userId": "bob", "event": "search"},
        {"type": "group", "userId": user_id, "groupId": "acme"},
        {"type": "track", "userId": 2147483000, "event": "search"},
    ]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True and body["accepted"] == 1
    assert [r["field"] for r in body["refused"]] == ["batch[1].userId", "batch[2].type", "batch[3].userId"]
    # Counted where an operator looks (three refused by the SDK's batch, three by this one).
    metrics = requests.get(f"{api}/metrics", timeout=10).text
    counted = next(line for line in metrics.splitlines() if line.startswith("pulse_segment_messages_refused_total"))
    assert float(counted.split()[-1]) >= 6, counted


def test_request_level_errors_carry_code_and_message(api, write_key):
    bad_json = requests.post(f"{api}/v1/batch", auth=(write_key, ""), data=b"{nope", timeout=10)
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "bad_request", bad_json.text
    too_big = requests.post(f"{api}/v1/batch", auth=(write_key, ""), timeout=10,
                            json={"batch": [{"type": "track", "userId": 1, "event": "x" * 600_000}]})
    assert too_big.status_code == 413 and too_big.json()["code"] == "payload_too_large", too_big.text
    chunked = requests.post(f"{api}/v1/batch", auth=(write_key, ""), timeout=10,
                            data=iter([b'{"batch": [', b" " * 600_000, b"]}"]))  # no Content-Length
    assert chunked.status_code == 413 and chunked.json()["code"] == "payload_too_large", chunked.text
    # A gzip bomb: a few hundred bytes inflating past the limit is refused without inflating it all.
    import gzip

    bomb = gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}")
    assert len(bomb) < 100_000
    inflated = requests.post(f"{api}/v1/batch", auth=(write_key, ""), data=bomb, timeout=10,
                             headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert inflated.status_code == 413 and inflated.json()["code"] == "payload_too_large", inflated.text
    no_key = requests.post(f"{api}/v1/track", json={"userId": 1, "event": "search"}, timeout=10)
    assert no_key.status_code == 401 and no_key.json()["message"], no_key.text
    preflight = requests.options(f"{api}/v1/t", timeout=10, headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"


def test_the_write_key_in_the_body_and_single_calls(api, client, write_key, mongo):
    """Older SDKs and analytics.js before 1.84 send the key as `writeKey` only; single calls
    (/v1/track, analytics.js's /v1/t) answer a refused message with 422 naming its field."""
    user_id = signed_up(client)
    tracked = str(uuid.uuid4())
    answer = requests.post(f"{api}/v1/t", data=f'{{"writeKey": "{write_key}", "userId": "{user_id}", '
                           f'"event": "Search", "messageId": "{tracked}", "properties": {{"query": "q"}}}}',
                           headers={"Content-Type": "text/plain"}, timeout=10)
    assert answer.status_code == 200, answer.text
    refused = requests.post(f"{api}/v1/track", auth=(write_key, ""), json={"userId": "carol", "event": "search"},
                            timeout=10)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "userId", refused.text
    assert refused.json()["code"] == "invalid_message"
    wait_stored(mongo, user_id, tracked)


def test_rudder_sdk_sends_gzip_batches_that_land_in_events(api, client, write_key, mongo):
    user_id = signed_up(client)
    errors = Errors()
    sdk = rudder_client.Client(write_key=write_key, host=api, on_error=errors, sync_mode=True, gzip=True,
                               max_retries=1)
    tracked, viewed = str(uuid.uuid4()), str(uuid.uuid4())
    sdk.track(user_id=str(user_id), event="add_to_cart", message_id=tracked,
              properties={"product_id": "sku-9", "category": "Garden", "price": 3.0})
    sdk.page(user_id=str(user_id), name="Home", message_id=viewed, properties={"url": "https://shop.example/"})
    sdk.identify(user_id=str(user_id), traits={"email": "someone@example.com"})  # nothing to link, not stored
    sdk.flush()
    assert errors.seen == []
    documents = wait_stored(mongo, user_id, tracked, viewed)
    assert documents[tracked]["metadata"] == {"product_id": "sku-9", "category": "Garden", "price": 3.0}
    assert documents[viewed]["metadata"] == {"name": "Home", "url": "https://shop.example/"}
    assert "someone@example.com" not in str(list(mongo["events"].find({"user_id": user_id})))
    # Its failure path: a wrong key is a 401 with a `code`, which it reports instead of retrying.
    with pytest.raises(RudderAPIError) as refused:
        rudder_client.Client(write_key="pulse_000000000000_" + "B" * 43, host=api, sync_mode=True,
                             max_retries=1).track(user_id="1", event="search")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


class _Page(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass


def test_analytics_js_in_a_browser_tracks_and_pages(api, client, write_key, mongo, tmp_path):
    from scripts import browser as browsers

    if not browsers.available():
        message = "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("PULSE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    assert hashlib.sha256(ANALYTICS_JS.read_bytes()).hexdigest() == ANALYTICS_JS_SHA256
    user_id = signed_up(client)
    host = api.removeprefix("http://") + "/v1"
    (tmp_path / "analytics.js").write_bytes(ANALYTICS_JS.read_bytes())
    (tmp_path / "index.html").write_text(f"""<!doctype html><html><head><title>Shop</title>
<script src="analytics.js"></script></head><body><script>
const settings = {{integrations: {{"Segment.io": {{apiHost: "{host}", protocol: "http"}}}}}};
AnalyticsNext.AnalyticsBrowser.load(
  {{writeKey: "{write_key}", cdnSettings: {{integrations: {{"Segment.io": {{apiKey: "{write_key}",
    apiHost: "{host}", protocol: "http"}}}}, metrics: {{sampleRate: 0}}}}}}, settings
).then(([analytics]) => Promise.all([
  analytics.identify("{user_id}"),
  analytics.track("Search", {{query: "boots"}}),
  analytics.page("Catalogue"),
])).then((contexts) => {{
  window.sent = contexts.map((ctx) => [ctx.event.type, ctx.event.messageId]);
}}).catch((error) => {{ window.failed = String(error); }});
</script></body></html>""")
    handler = lambda *args: _Page(*args, directory=str(tmp_path))  # noqa: E731
    pages = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    driver = browsers.chromium()
    try:
        driver.get(f"http://127.0.0.1:{pages.server_port}/index.html")
        sent = wait_for(lambda: driver.execute_script("return window.sent || window.failed"), timeout=30,
                        what="analytics.js to send its calls")
        assert isinstance(sent, list), sent
    finally:
        driver.quit()
        pages.shutdown()
    ids = {kind: message_id for kind, message_id in sent}
    documents = wait_stored(mongo, user_id, ids["track"], ids["page"])
    assert documents[ids["track"]]["event_type"] == "search"
    assert documents[ids["track"]]["metadata"] == {"query": "boots"}
    page = documents[ids["page"]]
    assert page["event_type"] == "page_view"
    assert page["metadata"]["name"] == "Catalogue" and page["metadata"]["title"] == "Shop"
    assert page["metadata"]["url"].endswith("/index.html") and page["metadata"]["path"] == "/index.html"


@NEEDS_VISITORS
def test_a_visitor_tracked_by_the_segment_sdk_then_identified_is_the_users(api, client, write_key, mongo):
    """The issue's "done when": the Segment Python SDK tracks a visitor, who then signs up and is
    identified; the profile shows the visits."""
    errors = Errors()
    sdk = segment(api, write_key, errors)
    visitor = f"visitor-{uuid.uuid4()}"
    visits = [str(uuid.uuid4()) for _ in range(3)]
    for n, message_id in enumerate(visits):
        sdk.page(anonymous_id=visitor, name=f"Page {n}", message_id=message_id,
                 properties={"url": f"https://shop.example/{n}"})
    wait_for(lambda: mongo["events"].count_documents({"anonymous_id": visitor}) == 3, timeout=60,
             what="the visitor's pages stored")
    user_id = signed_up(client)
    sdk.identify(user_id=str(user_id), anonymous_id=visitor, traits={"email": "v@example.com"})
    assert errors.seen == []
    wait_stored(mongo, user_id, *visits)
    bought = str(uuid.uuid4())
    sdk.track(anonymous_id=visitor, event="user_purchase", message_id=bought,
              properties={"product_id": "sku-3", "price": 10.0, "category": "Toys"})
    wait_stored(mongo, user_id, bought)

    def profile_shows_the_visits():
        profile = client.get(f"/api/users/{user_id}/profile").get_json()
        return profile if profile["totals"]["purchases"] == 1 and profile["totals"]["events"] >= 4 else None

    wait_for(profile_shows_the_visits, timeout=60, what="the profile showing the visitor's history")


def test_a_message_refused_by_the_tracking_plan_is_listed_among_its_violations(api, client, write_key, mongo):
    # An accepted batch answers 200 whatever it refused: the plan's violations list is where its
    # owner sees an SDK's events that break a `refuse` entry.
    user_id = signed_up(client)
    event_type, probe = (f"video_{uuid.uuid4().hex[:10]}" for _ in range(2))
    schema = {"type": "object", "required": ["video_id"], "properties": {"video_id": {"type": "string"}}}
    for name in (event_type, probe):
        response = client.put(f"/api/tracking-plan/event-types/{name}", json={"schema": schema,
                                                                             "on_violation": "refuse"})
        assert response.status_code == 201, response.get_json()

    def plan_applied() -> bool:  # the API process re-reads the plan within TRACKING_PLAN_REFRESH_SECONDS
        answer = requests.post(f"{api}/v1/track", auth=(write_key, ""), timeout=10,
                               json={"userId": user_id, "event": probe, "properties": {}})
        return answer.status_code == 422

    wait_for(plan_applied, timeout=30, what="the API process applying the plan")
    errors = Errors()
    sdk = segment(api, write_key, errors, sync_mode=False, upload_size=100)
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    sdk.track(user_id=str(user_id), event=event_type, message_id=good, properties={"video_id": "v1"})
    sdk.track(user_id=str(user_id), event=event_type, message_id=bad, properties={"seconds": 3})
    sdk.flush()
    sdk.join()
    assert errors.seen == []
    wait_stored(mongo, user_id, good)
    assert stored(mongo, user_id, bad) == []
    listed = {v["reason"]: v for v in client.get("/api/tracking-plan/violations").get_json()["items"]
              if v["event_type"] == event_type}
    assert listed["metadata.video_id: required"]["refused"] == 1, listed
    assert listed["metadata.video_id: required"]["example"]["event_id"] == bad
    # The answer names the field as the message has it: `properties`, which is Pulse's metadata.
    answer = requests.post(f"{api}/v1/batch", auth=(write_key, ""), timeout=10, json={"batch": [
        {"type": "track", "userId": user_id, "event": event_type, "properties": {"seconds": 3}}]})
    assert answer.status_code == 200, answer.text
    assert [r["field"] for r in answer.json()["refused"]] == ["batch[0].properties.video_id"]
    single = requests.post(f"{api}/v1/track", auth=(write_key, ""), timeout=10,
                           json={"userId": user_id, "event": event_type, "properties": {"seconds": 3}})
    assert single.status_code == 422 and [e["field"] for e in single.json()["errors"]] == ["properties.video_id"]
