"""Promise (docs/dashboard.md): the browser never holds the API key; it holds a session that
only reads, ends at logout, when the key is revoked and when it expires, travels only over HTTPS
when the request came over HTTPS, and the pages cannot be framed, sniffed or fed inline script.

The attacks: a cookie copied before logout and replayed after it; a cookie replayed to write, to
reach an admin read, or to read after its key was revoked; a client claiming `X-Forwarded-Proto:
https` without being a trusted proxy; a session whose time is up.
"""
import hashlib
import os
import time

import pytest
import redis as redis_lib
import requests

from shared.contracts.settings import get_settings
from shared.infra import api_keys
from shared.infra.db import session_scope
from tests.adversarial.redis_snapshots import pulse_keys
from tests.conftest import TEST_ENV
from tests.fixtures import wait_for
from tests.helpers import purchase, serve

pytestmark = pytest.mark.usefixtures("services")


def admin_key() -> str:
    return os.environ["PULSE_API_KEY"]  # the run's development key (every scope), set by the services fixture


HEADERS = {"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy"}


@pytest.fixture(scope="module")
def server(app):
    with serve(app) as url:
        yield url


def make_key(scopes: list[str]) -> tuple[str, str]:
    with session_scope() as session:
        row, key = api_keys.create(session, scopes, name="dashboard-adversarial")
        return row.id, key


def log_in(server: str, key: str, **headers) -> requests.Response:
    response = requests.post(f"{server}/dashboard/login", data={"key": key}, headers=headers,
                             allow_redirects=False, timeout=30)
    assert response.status_code == 303, response.text
    return response


def reads(server: str, cookie: str) -> int:
    return requests.get(f"{server}/api/pipeline", cookies={"pulse_session": cookie}, timeout=30).status_code


def test_the_cookie_never_holds_the_key(server):
    _, key = make_key(["read"])
    login = log_in(server, key)
    set_cookie = login.headers["Set-Cookie"]
    session_id = login.cookies["pulse_session"]
    assert key not in set_cookie and api_keys.KEY_FORMAT.fullmatch(key).group(2) not in set_cookie
    assert api_keys.digest(key) not in set_cookie
    assert len(session_id) >= 43 and session_id != key
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in set_cookie, set_cookie
    assert "Secure" not in set_cookie  # plain HTTP, as this request came
    # Redis keeps the session under its hash: a copy of Redis logs nobody in, nor shows the key.
    redis = redis_lib.Redis.from_url(TEST_ENV["REDIS_URL"])
    stored = [name for name in pulse_keys(redis) if b"dashboard:session:" in name]
    assert any(hashlib.sha256(session_id.encode()).hexdigest().encode() in name for name in stored)
    assert all(session_id.encode() not in name and key.encode() not in (redis.get(name) or b"") for name in stored)
    # And the page the browser gets does not carry it either.
    page = requests.get(f"{server}/dashboard", cookies=login.cookies, timeout=30)
    assert page.status_code == 200 and key not in page.text


def test_the_session_only_reads_whatever_key_logged_in(server):
    login = log_in(server, admin_key())  # every scope
    jar = {"pulse_session": login.cookies["pulse_session"]}
    assert requests.get(f"{server}/api/pipeline", cookies=jar, timeout=30).status_code == 200
    assert requests.post(f"{server}/api/events", json=purchase(1, 10.0, "Books"), cookies=jar,
                         timeout=30).status_code == 401
    assert requests.get(f"{server}/api/keys", cookies=jar, timeout=30).status_code == 401
    assert requests.get(f"{server}/api/users/1/export", cookies=jar, timeout=30).status_code == 401
    assert requests.delete(f"{server}/api/users/1", cookies=jar, timeout=30).status_code == 401
    # Sent as a credential instead of a cookie, the session is still the read scope only.
    as_header = {"Authorization": f"session {jar['pulse_session']}"}
    refused = requests.get(f"{server}/api/keys", headers=as_header, timeout=30)
    assert refused.status_code == 403 and "lacks the admin scope" in refused.json()["detail"]
    # The key itself in a cookie (where the dashboard kept it before sessions) counts for nothing.
    assert requests.get(f"{server}/api/pipeline", cookies={"pulse_key": admin_key()}, timeout=30).status_code == 401


def test_logout_ends_the_session_even_for_a_copied_cookie(server):
    _, key = make_key(["read"])
    cookie = log_in(server, key).cookies["pulse_session"]
    copied = cookie  # what an attacker lifted from the browser before the user logged out
    assert reads(server, copied) == 200
    logout = requests.post(f"{server}/dashboard/logout", cookies={"pulse_session": cookie}, allow_redirects=False,
                           timeout=30)
    assert logout.status_code == 303 and "pulse_session=;" in logout.headers["Set-Cookie"]
    assert "Max-Age=0" in logout.headers["Set-Cookie"]  # the browser drops it
    assert reads(server, copied) == 401
    page = requests.get(f"{server}/dashboard", cookies={"pulse_session": copied}, allow_redirects=False, timeout=30)
    assert page.status_code == 303 and page.headers["Location"].startswith("/dashboard/login")
    # A logout posted from another site is refused, so no page elsewhere can end (or test) a session.
    other = log_in(server, key).cookies["pulse_session"]
    forged = requests.post(f"{server}/dashboard/logout", cookies={"pulse_session": other},
                           headers={"Origin": "https://evil.example"}, allow_redirects=False, timeout=30)
    assert forged.status_code == 403 and reads(server, other) == 200


def test_revoking_the_key_ends_its_sessions(server):
    key_id, key = make_key(["read"])
    cookie = log_in(server, key).cookies["pulse_session"]
    assert reads(server, cookie) == 200
    assert requests.delete(f"{server}/api/keys/{key_id}", headers={"Authorization": f"Bearer {admin_key()}"},
                           timeout=30).status_code == 204
    assert reads(server, cookie) == 401


def test_a_session_expires(server):
    settings = get_settings()
    lasted = settings.dashboard_session_seconds
    settings.dashboard_session_seconds = 1  # this process's setting, for the logins below
    try:
        _, key = make_key(["read"])
        login = log_in(server, key)
        assert "Max-Age=1" in login.headers["Set-Cookie"]
        cookie = login.cookies["pulse_session"]
        started = time.monotonic()
        assert reads(server, cookie) == 200 or time.monotonic() - started > 1
        # Replayed past its time (a browser would have dropped it; an attacker does not): refused.
        wait_for(lambda: reads(server, cookie) == 401, timeout=10, what="the session to expire in Redis")
    finally:
        settings.dashboard_session_seconds = lasted


def test_secure_only_when_a_trusted_proxy_says_https(server):
    _, key = make_key(["read"])
    # Anyone can send the header: from a peer that is not a trusted proxy it changes nothing.
    assert "Secure" not in log_in(server, key, **{"X-Forwarded-Proto": "https"}).headers["Set-Cookie"]
    settings = get_settings()
    trusted = settings.trusted_proxies
    settings.trusted_proxies = "127.0.0.0/8"  # the test client is the proxy now
    try:
        proxied = log_in(server, key, **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
        assert "Secure" in proxied.headers["Set-Cookie"]
        assert "Secure" not in log_in(server, key, **{"X-Forwarded-Proto": "http"}).headers["Set-Cookie"]
    finally:
        settings.trusted_proxies = trusted


@pytest.mark.parametrize("path", ["/dashboard/login", "/dashboard", "/dashboard/users/1", "/dashboard/insights",
                                  "/dashboard/static/dashboard.js"])
def test_every_dashboard_answer_carries_the_security_headers(server, path):
    cookie = log_in(server, admin_key()).cookies["pulse_session"]
    for cookies in ({}, {"pulse_session": cookie}):  # the login redirect too
        response = requests.get(f"{server}{path}", cookies=cookies, allow_redirects=False, timeout=30)
        assert HEADERS <= set(response.headers), (path, response.status_code, dict(response.headers))
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"  # nothing to other sites
        if response.status_code == 200 and path != "/dashboard/static/dashboard.js":
            assert "<script>" not in response.text  # no inline script for the policy to allow
