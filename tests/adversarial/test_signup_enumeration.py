"""Promises (docs/api.md, Enumeration; docs/keys.md): signup's 409 names the taken field and nothing else;
what one client can learn from it is bounded by the per-client signup limit, counted before the
body is read; the client is the real one behind TRUSTED_PROXIES, and a client that is not behind
one cannot choose its bucket by sending X-Forwarded-For.

Attacked over HTTP against an API server whose trusted proxy is 127.0.0.2: requests made from
127.0.0.1 come from a client talking to the API directly, requests made from 127.0.0.2 (bound as
the source address, as a proxy on that host would) come through the proxy."""
import json
import os
import uuid
from http.client import HTTPConnection
from urllib.parse import urlsplit

import pytest
import requests
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from scripts.private_servers import api_server
from tests.conftest import TEST_ENV
from tests.helpers import signup_body

PROXY = "127.0.0.2"
LIMIT = 10  # as RATE_LIMIT_SIGNUP's default (10/minute), per hour here: the sliding window's edge, where
# the last window's count starts to fade, is then hours away from a test that lasts seconds, so the
# bound is exact


@pytest.fixture(scope="module")
def api(services):
    # A Redis prefix of its own: the signup buckets of 127.0.0.1 start empty, whatever else the
    # run has sent.
    prefix = f"{TEST_ENV['CACHE_PREFIX']}enum-{uuid.uuid4().hex[:6]}:"
    with api_server("adversarial-enumeration", {"TRUSTED_PROXIES": f"{PROXY}/32", "RATE_LIMIT_SIGNUP": f"{LIMIT}/hour",
                                                "CACHE_PREFIX": prefix}) as url:
        yield url


def post_signup(api: str, body: dict, source: str = "127.0.0.1", forwarded: str | None = None) -> tuple[int, dict]:
    """One anonymous signup over a connection from `source`, optionally with X-Forwarded-For."""
    parts = urlsplit(api)
    connection = HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    headers = {"Content-Type": "application/json"}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    try:
        connection.request("POST", "/api/users/signup", body=json.dumps(body), headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.fixture(scope="module")
def victim(api) -> dict:
    body = signup_body()
    admin = {"Authorization": f"Bearer {os.environ['PULSE_API_KEY']}"}
    assert requests.post(f"{api}/api/users/signup", json=body, headers=admin, timeout=30).status_code == 201
    return body


def test_the_409_names_the_taken_field_and_nothing_about_its_owner(api, victim):
    probe = signup_body(email=victim["email"])
    status, problem = post_signup(api, probe, source=PROXY, forwarded="198.51.100.1")
    assert status == 409
    assert [e["field"] for e in problem["errors"]] == ["email"]
    text = json.dumps(problem)
    assert victim["username"] not in text and victim["full_name"] not in text and "id" not in problem


def test_a_client_talking_directly_learns_at_most_the_limit_however_it_spoofs_x_forwarded_for(api, victim):
    answers = []
    for n in range(LIMIT + 8):
        # A careless or hostile client: every request claims another origin.
        probe = signup_body(email=victim["email"] if n % 2 else f"nobody.{uuid.uuid4().hex[:8]}@example.com")
        answers.append(post_signup(api, probe, source="127.0.0.1", forwarded=f"203.0.113.{n + 1}"))
    informative = [status for status, _ in answers if status != 429]
    assert len(informative) <= LIMIT, [status for status, _ in answers]
    assert [status for status, _ in answers[LIMIT:]] == [429] * 8
    for status, problem in answers:
        if status == 429:  # counted before the body is read: says nothing about the address
            assert "errors" not in problem and "email" not in json.dumps(problem)


def test_behind_the_trusted_proxy_each_real_client_has_its_own_bucket(api):
    def attempts(forwarded: str, n: int) -> list[int]:
        return [post_signup(api, signup_body(), source=PROXY, forwarded=forwarded)[0] for _ in range(n)]

    first = attempts("192.0.2.10", LIMIT + 2)
    assert first[:LIMIT] == [201] * LIMIT and first[LIMIT:] == [429, 429]
    # Another client behind the same proxy is not punished for the first one.
    assert attempts("192.0.2.11", 1) == [201]
    # The first client cannot escape by prepending an address of its own choosing: the proxy
    # appended the one it saw, and that is the one read.
    assert attempts("10.9.8.7, 192.0.2.10", 2) == [429, 429]
    # Nor by the proxy's own address: trusted hops are skipped.
    assert attempts(f"192.0.2.10, {PROXY}", 1) == [429]


def client_of(remote: str, forwarded: str | None, trusted: str) -> str:
    from services.api import proxies
    from shared.contracts.settings import get_settings

    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    environ = EnvironBuilder(headers=headers, environ_base={"REMOTE_ADDR": remote}).get_environ()
    settings = get_settings()
    before = settings.trusted_proxies
    settings.trusted_proxies = trusted
    try:
        return proxies.client_address(Request(environ))
    finally:
        settings.trusted_proxies = before


@pytest.mark.parametrize("remote,forwarded,trusted,client", [
    ("203.0.113.5", "1.2.3.4", "", "203.0.113.5"),                      # no proxies configured: the peer
    ("203.0.113.5", "1.2.3.4", "10.0.0.0/8", "203.0.113.5"),            # the peer is not a proxy of ours
    ("10.0.0.7", "1.2.3.4", "10.0.0.0/8", "1.2.3.4"),                   # through our proxy
    ("10.0.0.7", "6.6.6.6, 1.2.3.4", "10.0.0.0/8", "1.2.3.4"),          # the client's own entry is ignored
    ("10.0.0.7", "1.2.3.4, 10.0.0.8", "10.0.0.0/8", "1.2.3.4"),         # two proxies of ours
    ("10.0.0.7", "10.0.0.9, 10.0.0.8", "10.0.0.0/8", "10.0.0.9"),       # every hop ours: the leftmost
    ("10.0.0.7", None, "10.0.0.0/8", "10.0.0.7"),                       # no header: the proxy itself
    ("10.0.0.7", "garbage, 1.2.3.4", "10.0.0.0/8", "1.2.3.4"),
    ("10.0.0.7", "1.2.3.4, garbage", "10.0.0.0/8", "garbage"),          # what our proxy wrote, verbatim
    ("::ffff:10.0.0.7", "2001:db8::1", "10.0.0.0/8", "2001:db8::1"),    # IPv4-mapped peer
    ("2001:db8:1::5", "1.2.3.4", "2001:db8:1::/48, 10.0.0.1", "1.2.3.4"),
])
def test_the_client_address_is_read_as_proxyfix_reads_it(remote, forwarded, trusted, client):
    assert client_of(remote, forwarded, trusted) == client
