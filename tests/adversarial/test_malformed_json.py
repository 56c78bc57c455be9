"""Promise: a body too deep, too big or not quite JSON gets a 400 (or 413) problem naming the body,
never a 500, on every route that reads JSON (docs/api.md).

Attacked over HTTP against the API server as `make dev` runs it. The routes are taken from the
API's own OpenAPI document (every operation with a request body), so a route added later is
attacked too."""
import json
import os

import pytest
import requests

from services.api.json_body import MAX_DEPTH, nesting_exceeds


def key() -> dict[str, str]:
    # The run's development key (every scope; set by the services fixture): no rate limit, no
    # 401/403 in front of the body checks.
    return {"Authorization": f"Bearer {os.environ['PULSE_API_KEY']}"}

DEEP = 100_000


@pytest.fixture(scope="module")
def json_routes(api) -> list[tuple[str, str]]:
    spec = requests.get(f"{api}/openapi/openapi.json", timeout=10).json()
    routes = [(method.upper(), path.replace("{user_id}", "1").replace("{key_id}", "000000000000"))
              for path, item in spec["paths"].items() for method, operation in item.items()
              if "requestBody" in operation]
    assert ("POST", "/api/users/signup") in routes and ("POST", "/api/events/batch") in routes
    return routes


def send(api: str, method: str, path: str, body: bytes, **headers) -> requests.Response:
    return requests.request(method, f"{api}{path}", data=body, timeout=60,
                            headers={**key(), "Content-Type": "application/json", **headers})


def assert_body_problem(response: requests.Response, status: int = 400) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/problem+json")
    if status == 400:
        assert [e["field"] for e in response.json()["errors"]] == ["body"], response.text[:300]


@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")], ids=["arrays", "objects"])
def test_json_nested_100000_deep_is_a_400_on_every_json_route(api, json_routes, opener, closer):
    from services.api.segment import BATCH_MAX_BYTES

    body = (opener * DEEP + "1" + closer * DEEP).encode()
    for method, path in json_routes:
        response = send(api, method, path, body)
        if path.startswith("/v1/") and len(body) > BATCH_MAX_BYTES:
            # Segment's API takes at most 500 KiB a request (docs/segment.md): too big before too deep.
            assert_body_problem(response, 413)
            continue
        assert_body_problem(response)
        assert "nested more than" in response.json()["detail"], (path, response.json())


def test_the_public_signup_refuses_deep_json_without_a_key(api):
    # The original report: the anonymous signup answered 500 (RecursionError).
    response = requests.post(f"{api}/api/users/signup", data="[" * DEEP + "]" * DEEP, timeout=60,
                             headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 429), response.text[:300]  # 429: this client's signups are used up
    if response.status_code == 400:
        assert_body_problem(response)


def test_deep_json_that_never_closes_is_a_400(api, json_routes):
    for method, path in json_routes:
        assert_body_problem(send(api, method, path, b"[" * DEEP))


def test_deep_json_sent_chunked_without_a_length_is_a_400(api):
    def chunks():
        for _ in range(100):
            yield b"[" * 1000
        for _ in range(100):
            yield b"]" * 1000

    response = requests.post(f"{api}/api/events/batch", data=chunks(), timeout=60,
                             headers={**key(), "Content-Type": "application/json"})
    assert_body_problem(response)


def test_depth_hidden_behind_brackets_inside_strings_is_still_counted(api):
    # Closing brackets inside a string are text: they must not hide the real nesting.
    body = '{"events": [{"metadata": {"x": "' + "]" * 200 + '"}}, ' + "[" * 40 + "1" + "]" * 40 + "]}"
    assert_body_problem(send(api, "POST", "/api/events/batch", body.encode()))


def test_brackets_inside_strings_are_not_nesting(api):
    # Many brackets, all of them text: the body is shallow and reaches validation (422), not a 400.
    events = [{"user_id": 1, "event_type": "search", "metadata": {"q": "[" * 500 + "{" * 500}}]
    response = requests.post(f"{api}/api/events/batch", json={"events": events}, headers=key(), timeout=30)
    assert response.status_code != 400, response.text[:300]
    assert response.status_code < 500


def test_the_depth_limit_is_exact(api):
    at_limit = ("[" * MAX_DEPTH + "]" * MAX_DEPTH).encode()
    over = ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode()
    assert not nesting_exceeds(at_limit) and nesting_exceeds(over)
    assert send(api, "POST", "/api/events/batch", at_limit).status_code == 422  # parsed, then invalid
    assert_body_problem(send(api, "POST", "/api/events/batch", over))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(api, constant):
    body = f'{{"events": [{{"user_id": 1, "event_type": "user_purchase", "metadata": {{"product_id": "p", ' \
           f'"price": {constant}, "category": "Books"}}}}]}}'
    assert_body_problem(send(api, "POST", "/api/events/batch", body.encode()))


def test_an_integer_of_100000_digits_is_a_400(api):
    body = '{"user_id": ' + "9" * 100_000 + ', "event_type": "login"}'
    assert_body_problem(send(api, "POST", "/api/events", body.encode()))


def test_a_body_over_16_mib_is_a_413_problem(api):
    body = b'{"events": [' + b'"' + b"x" * (17 * 1024 * 1024) + b'"]}'
    assert_body_problem(send(api, "POST", "/api/events/batch", body), status=413)


def test_a_huge_body_sent_chunked_is_a_413_problem(api):
    def chunks():
        yield b'{"events": ["'
        for _ in range(17):
            yield b"x" * (1024 * 1024)
        yield b'"]}'

    response = requests.post(f"{api}/api/events/batch", data=chunks(), timeout=60,
                             headers={**key(), "Content-Type": "application/json"})
    assert_body_problem(response, status=413)


def test_a_batch_sent_as_a_json_string_cannot_skip_the_batch_limit(api):
    """A careless (or clever) client double-encodes its batch: the body is a JSON string holding
    the object. flask-openapi3 would validate the string's contents, skipping the 413 check that
    reads an object; Pulse refuses any events body that is not an object, whatever its size."""
    from shared.contracts.settings import get_settings

    events = [{"user_id": 1, "event_type": "page_view", "timestamp": "2026-01-01T00:00:00Z",
               "event_id": f"double-{i}", "metadata": {"page": "/"}}
              for i in range(get_settings().events_batch_max + 1)]
    for path, inner in (("/api/events/batch", {"events": events}), ("/api/events/batch", {"events": events[:1]}),
                        ("/api/events", events[0])):
        response = requests.post(f"{api}{path}", data=json.dumps(json.dumps(inner)),
                                 headers={**key(), "Content-Type": "application/json"}, timeout=60)
        assert response.status_code == 422, (path, response.status_code, response.text[:200])
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert response.json()["errors"] == [{"field": "body", "message": "must be a JSON object"}]
