"""services.api.segment without servers: how a Segment message becomes a Pulse event (the
mapping docs/segment.md promises), and what SegmentTransport does to a /v1 request before Flask
(gzip with its cap, the CORS preflight, analytics.js's short paths). The SDKs themselves are
driven against a running API in tests/integration/test_segment.py."""
import base64
import gzip
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.api.segment import (
    BATCH_MAX_BYTES,
    Link,
    Refused,
    SegmentTransport,
    anonymous_visitors,
    event_name,
    translate,
    write_key,
)

NOW = datetime.now(UTC).replace(microsecond=0)


def refused(message, kind=None) -> Refused:
    with pytest.raises(Refused) as caught:
        translate(message, kind, NOW, None)
    return caught.value


@pytest.mark.parametrize(("name", "event_type"), [
    ("Product Added", "product_added"), ("  Add-To  Cart!! ", "add_to_cart"), ("user_purchase", "user_purchase"),
    ("Order Completed (v2)", "order_completed_v2"), ("x" * 64, "x" * 64),
])
def test_event_names_become_snake_case_types(name, event_type):
    assert event_name(name) == event_type


@pytest.mark.parametrize("name", ["", "!!!", "123 go", "x" * 65, None, 7])
def test_names_that_make_no_type_are_refused(name):
    with pytest.raises(Refused) as caught:
        event_name(name)
    assert caught.value.field == "event"


def test_a_track_is_the_event_with_its_properties_as_metadata_and_message_id_as_event_id():
    event = translate({"type": "track", "userId": "42", "event": "User Purchase", "messageId": "ajs-next-"
                       "1733550000000-5f0c9f3e-6f6e-4d7e-9a55-2f0a1f2b3c4d",
                       "properties": {"product_id": "p1", "price": 9.5, "category": "Books"},
                       "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0"}}, None, NOW, None)
    assert (event.event_type, event.user_id) == ("user_purchase", 42)
    assert event.event_id == "ajs-next-1733550000000-5f0c9f3e-6f6e-4d7e-9a55-2f0a1f2b3c4d"
    assert event.metadata.model_dump(exclude_none=True) == {"product_id": "p1", "price": 9.5, "category": "Books"}
    assert "203.0.113.9" not in event.model_dump_json() and "Mozilla" not in event.model_dump_json()


def test_built_in_types_keep_their_strict_models():
    problem = refused({"type": "track", "userId": 1, "event": "user_purchase", "properties": {"price": 3}})
    assert problem.field == "properties" and "product_id" in problem.reason


@pytest.mark.parametrize("user_id", ["alice@example.com", "12a", True, 1.5, {"id": 1}, "99999999999", "0", 0,
                                     2**31, "4596040344", -3])
def test_a_user_id_must_be_a_pulse_user_id(user_id):
    assert refused({"type": "track", "userId": user_id, "event": "search"}).field == "userId"


def test_the_client_clock_is_corrected_by_sent_at():
    # The client's clock is an hour slow; it measured 5 s between the event and sending it.
    client_now = NOW - timedelta(hours=1)
    message = {"type": "track", "userId": 1, "event": "search", "timestamp": (client_now - timedelta(seconds=5))
               .isoformat().replace("+00:00", "Z")}
    assert translate(message, None, NOW, client_now).timestamp == NOW - timedelta(seconds=5)
    # A single call's own sentAt wins over the batch's.
    message["sentAt"] = (client_now + timedelta(seconds=5)).isoformat()
    assert translate(message, None, NOW, client_now).timestamp == NOW - timedelta(seconds=10)
    # Without any sentAt the timestamp is the client's.
    del message["sentAt"]
    assert translate(message, "track", NOW, None).timestamp == client_now - timedelta(seconds=5)
    assert refused({**message, "timestamp": "yesterday"}).field == "timestamp"
    assert refused({**message, "timestamp": "0186-12-17T14:17:46Z", "sentAt": "6132-08-03T22:47:19Z"}).field \
        == "timestamp"


def test_page_and_screen_are_page_views_with_the_page_fields():
    event = translate({"type": "page", "userId": 3, "name": "Pricing", "properties": {"title": "Our prices"},
                       "context": {"page": {"url": "https://shop.example/p?q=1", "path": "/p", "referrer": "",
                                            "title": "ignored: properties come first", "search": "?q=1"}}},
                      None, NOW, None)
    assert event.event_type == "page_view"
    assert event.metadata == {"name": "Pricing", "url": "https://shop.example/p?q=1", "path": "/p",
                              "title": "Our prices"}
    long_url = "https://shop.example/" + "a" * 2000
    event = translate({"userId": 3, "properties": {"url": long_url}}, "page", NOW, None)
    assert event.metadata == {"url": long_url[:1000]}
    assert translate({"type": "screen", "userId": 3, "name": "Home"}, None, NOW, None).metadata == {"name": "Home"}


def test_identify_and_alias_are_links_and_traits_are_not_kept():
    assert translate({"type": "identify", "userId": "7", "anonymousId": "a-1", "traits": {"email": "x@y.z"}},
                     None, NOW, None) == Link("a-1", 7)
    assert translate({"type": "identify", "userId": 7, "traits": {"email": "x@y.z"}}, None, NOW, None) is None
    assert translate({"type": "alias", "previousId": "a-2", "userId": 7}, None, NOW, None) == Link("a-2", 7)
    # Out of a user id's range: refused before any link is looked up.
    assert refused({"type": "identify", "userId": 2**31, "anonymousId": "a-1"}).field == "userId"
    assert refused({"type": "alias", "userId": 7}).field == "previousId"
    assert refused({"type": "group", "userId": 7, "groupId": "acme"}).field == "type"
    assert refused({"type": "launch", "userId": 7}).field == "type"


def test_a_message_without_a_user():
    message = {"type": "track", "anonymousId": "visitor-1", "event": "search"}
    if anonymous_visitors():
        assert translate(message, None, NOW, None).anonymous_id == "visitor-1"
    else:
        assert refused(message).field == "userId"
    assert refused({"type": "track", "event": "search"}).field == "userId"


def test_a_message_over_32_kib_is_refused():
    assert refused({"type": "track", "userId": 1, "event": "search",
                    "properties": {"query": "q" * 33_000}}).field == "body"


def test_the_write_key_is_the_basic_user_name():
    encoded = base64.b64encode(b"pulse_abc:").decode()
    assert write_key(f"Basic {encoded}") == "pulse_abc"
    assert write_key("Basic !!!") is None
    assert write_key("Bearer pulse_abc") is None
    assert write_key(None) is None


class Inner:
    """The app behind SegmentTransport: records what reached it."""

    def __init__(self) -> None:
        self.environ: dict | None = None
        self.body = b""

    def __call__(self, environ, start_response):
        self.environ = environ
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.body = environ["wsgi.input"].read(length)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]


def call(path: str, method: str = "POST", body: bytes = b"", **headers: str):
    inner = Inner()
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)), **headers}
    answer: dict = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"], answer["headers"] = status, dict(response_headers)

    data = b"".join(SegmentTransport(inner)(environ, start_response))
    return answer["status"], answer["headers"], data, inner


def test_gzip_bodies_are_inflated_for_the_views():
    body = json.dumps({"batch": []}).encode()
    status, headers, _, inner = call("/v1/batch", body=gzip.compress(body), HTTP_CONTENT_ENCODING="gzip")
    assert status == "200 OK" and inner.body == body
    assert inner.environ is not None and "HTTP_CONTENT_ENCODING" not in inner.environ
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_a_gzip_bomb_is_refused_without_being_inflated_whole():
    bomb = gzip.compress(b" " * (200 * BATCH_MAX_BYTES))
    status, _, data, inner = call("/v1/batch", body=bomb, HTTP_CONTENT_ENCODING="gzip")
    assert status.startswith("413") and json.loads(data)["code"] == "payload_too_large"
    assert inner.environ is None
    status, _, data, _ = call("/v1/batch", body=b"not gzip", HTTP_CONTENT_ENCODING="gzip")
    assert status.startswith("400") and json.loads(data)["code"] == "bad_request"
    status, _, _, _ = call("/v1/batch", body=b"{}", HTTP_CONTENT_ENCODING="br")
    assert status.startswith("415")
    status, _, _, inner = call("/v1/batch", body=b"x" * (BATCH_MAX_BYTES + 1))
    assert status.startswith("413") and inner.environ is None


def test_the_preflight_short_paths_and_metrics():
    status, headers, _, inner = call("/v1/t", method="OPTIONS")
    assert status.startswith("204") and inner.environ is None
    assert {"Authorization", "Content-Type", "X-Retry-Count"} <= {
        h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}
    for short, long in (("t", "track"), ("p", "page"), ("i", "identify"), ("a", "alias"), ("b", "batch")):
        _, _, _, inner = call(f"/v1/{short}", body=b"{}")
        assert inner.environ is not None and inner.environ["PATH_INFO"] == f"/v1/{long}"
    status, _, data, inner = call("/v1/m", body=b"{}")
    assert status == "200 OK" and inner.environ is None and json.loads(data) == {"success": True}
    _, headers, _, inner = call("/api/events", body=b"{}", HTTP_CONTENT_ENCODING="gzip")
    assert inner.environ is not None and "Access-Control-Allow-Origin" not in headers  # not /v1: untouched


@pytest.mark.parametrize(("message", "field"), [
    ({"type": "identify", "userId": 1, "traits": "x"}, "traits"),
    ({"type": "identify", "userId": 1, "messageId": "has space"}, "messageId"),
    ({"type": "identify", "userId": 1, "anonymousId": "a\x00b"}, "anonymousId"),
    ({"type": "identify", "userId": 1, "anonymousId": "a" * 201}, "anonymousId"),
    ({"type": "track", "userId": 1, "event": "search", "context": 5}, "context"),
    ({"type": "page", "userId": 1, "name": 5}, "name"),
    ({"type": "track", "userId": 1, "event": "search", "writeKey": 5}, "writeKey"),
    ({"type": "identify", "traits": {}}, "userId"),
    ({"type": "track", "userId": "\t5", "event": "search"}, "userId"),
    ({"type": "track", "userId": "\u0665", "event": "search"}, "userId"),  # a digit, but not 0-9
])
def test_what_the_document_says_each_field_is_is_enforced(message, field):
    assert refused(message).field == field
