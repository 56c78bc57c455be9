"""Promises (docs/keys.md): a revoked or expired key is refused by
every API process from the next request on; a made-up key costs Postgres a bounded number of
queries, and a client that sends many is answered 429 with Retry-After.

The attacks: a key that leaked keeps being used against the API process that did not revoke it
(two real granian processes, each told to trust a checked key for five minutes, so only the
announcement can stop it), on the cached-profile fast path too; a flood of made-up keys, each new,
from one client, also rotating X-Forwarded-For to look like many clients.
"""
import http.client
import os
import secrets
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from limits import parse

from scripts.private_servers import ApiServer
from shared.contracts.settings import get_settings
from shared.infra import api_keys
from shared.infra.db import session_scope
from tests.fixtures import PULSE, ROOT, wait_for
from tests.helpers import count_statements, serve, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


def make_key(scopes: list[str], expires_at: datetime | None = None) -> tuple[str, str]:
    with session_scope() as session:
        row, key = api_keys.create(session, scopes, name="adversarial", expires_at=expires_at)
        return row.id, key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def admin() -> dict[str, str]:
    return bearer(os.environ["PULSE_API_KEY"])  # the run's development key, set by the services fixture


@pytest.fixture(scope="module")
def two_apis():
    # Five minutes of trust in a checked key: without the revocation announcement, the process
    # that did not revoke a key would accept it that long.
    processes = [ApiServer({"API_KEY_CACHE_SECONDS": "300"}) for _ in range(2)]
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in processes:
            process.remove()


@pytest.fixture(scope="module")
def cached_user(two_apis, mongo):
    """A user whose profile both processes answer from the cache (the fast path before Flask)."""
    first = two_apis[0].url
    user_id = requests.post(f"{first}/api/users/signup", json=signup_body(), headers=admin(), timeout=30).json()["id"]
    # The worker has stored the signup (a new cache version) and analytics profiled it: nothing
    # changes the user's version any more.
    wait_for(lambda: mongo.profiles.find_one({"user_id": user_id, "segment": {"$ne": None}}),
             what="the user's first profile")
    for api in two_apis:
        wait_for(lambda api=api: requests.get(f"{api.url}/api/users/{user_id}/profile", headers=admin(), timeout=30)
                 .headers.get("X-Cache") == "HIT", what="a cached profile")
    return user_id


def reads(api: ApiServer, key: str, user_id: int) -> list[requests.Response]:
    return [requests.get(f"{api.url}/api/users?per_page=1", headers=bearer(key), timeout=30),
            requests.get(f"{api.url}/api/users/{user_id}/profile", headers=bearer(key), timeout=30)]


def test_a_revoked_key_is_refused_by_every_api_process_from_the_next_request(two_apis, cached_user):
    revoking, other = two_apis
    key_id, key = make_key(["read"])
    for api in two_apis:  # both processes have checked the key and remember it, on the fast path too
        assert [r.status_code for r in reads(api, key, cached_user)] == [200, 200]
        wait_for(lambda api=api: reads(api, key, cached_user)[1].headers["X-Cache"] == "HIT", what="a cached profile")

    assert requests.delete(f"{revoking.url}/api/keys/{key_id}", headers=admin(), timeout=30).status_code == 204
    for api in (other, revoking):  # no wait: the very next request
        for refused in reads(api, key, cached_user):
            assert refused.status_code == 401, (api.url, refused.request.url, refused.text)
            assert refused.headers["Content-Type"] == "application/problem+json"
            assert "revoked" in refused.json()["detail"]

    # Revoked from the command line: no API process is involved in the revocation at all.
    key_id, key = make_key(["read"])
    for api in two_apis:
        assert [r.status_code for r in reads(api, key, cached_user)] == [200, 200]
    subprocess.run([PULSE, "keys", "revoke", key_id], cwd=ROOT, check=True,
                   capture_output=True, timeout=60)
    for api in two_apis:
        assert [r.status_code for r in reads(api, key, cached_user)] == [401, 401]


def test_an_expired_key_is_refused_by_every_api_process_once_it_expires(two_apis, cached_user):
    expires = datetime.now(UTC) + timedelta(seconds=3)
    _, key = make_key(["read"], expires)
    for api in two_apis:
        assert [r.status_code for r in reads(api, key, cached_user)] == [200, 200]
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)  # the expiry itself, not a poll
    for api in two_apis:
        for refused in reads(api, key, cached_user):
            assert refused.status_code == 401 and "expired" in refused.json()["detail"]


@pytest.fixture(scope="module")
def server(app):
    with serve(app) as url:
        yield url


def get_from(client_ip: str, base: str, path: str, headers: dict) -> tuple[int, dict, bytes]:
    """A GET over its own connection from `client_ip` (any 127.x.y.z is this machine's loopback):
    one client as the server sees it."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(client_ip, 0))
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def made_up_key() -> str:
    return f"pulse_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def key_lookups(statements: list[str]) -> int:
    return sum(1 for statement in statements if "api_keys" in statement)


def test_a_flood_of_made_up_keys_costs_bounded_lookups_and_is_answered_429(server):
    limit = parse(get_settings().rate_limit_auth_failures).amount
    flood = 3 * limit
    with count_statements() as statements:
        answers = [get_from("127.0.0.23", server, "/api/users?per_page=1", bearer(made_up_key())) for _ in range(flood)]
        # Made-up keys on the cached-profile path (answered before Flask) count the same.
        answers += [get_from("127.0.0.23", server, "/api/users/1/profile", bearer(made_up_key())) for _ in range(5)]
    assert key_lookups(statements) <= limit, key_lookups(statements)
    statuses = [status for status, _, _ in answers]
    assert statuses[:limit] == [401] * limit and set(statuses[limit:]) == {429}, statuses
    status, headers, _ = answers[-1]
    assert headers["Content-Type"] == "application/problem+json" and int(headers["Retry-After"]) > 0

    # Rotating X-Forwarded-For from a peer that is not a trusted proxy does not make it many clients.
    with count_statements() as statements:
        spoofed = [get_from("127.0.0.23", server, "/api/users?per_page=1",
                            {**bearer(made_up_key()), "X-Forwarded-For": f"10.0.{i}.1"})[0] for i in range(20)]
    assert set(spoofed) == {429} and key_lookups(statements) == 0

    # A real key this process knows (just checked, for another client) still works for the client
    # over the limit: only keys that would need a lookup are refused.
    assert get_from("127.0.0.26", server, "/api/users?per_page=1", admin())[0] == 200
    assert get_from("127.0.0.23", server, "/api/users?per_page=1", admin())[0] == 200
    # Another client is not affected.
    assert get_from("127.0.0.24", server, "/api/users?per_page=1", bearer(made_up_key()))[0] == 401


def test_the_same_made_up_key_again_and_again_costs_one_lookup(server):
    key = made_up_key()
    with count_statements() as statements:
        statuses = [get_from("127.0.0.25", server, "/api/users?per_page=1", bearer(key))[0] for _ in range(50)]
        # Not even the shape of a key: never looked up.
        statuses += [get_from("127.0.0.25", server, "/api/users?per_page=1", bearer("x" * n))[0] for n in range(1, 30)]
    assert set(statuses) == {401} and key_lookups(statements) == 1


def test_behind_a_trusted_proxy_each_client_has_its_own_budget(server):
    """Behind a reverse proxy every request comes from the proxy's address: the limit must key on
    the client it names (its last X-Forwarded-For value), or one flood would lock everybody out."""
    settings = get_settings()
    trusted = settings.trusted_proxies
    settings.trusted_proxies = "127.0.0.27/32"  # this test's proxy
    limit = parse(settings.rate_limit_auth_failures).amount
    try:
        def through_proxy(client: str, forwarded_for: str | None = None) -> int:
            headers = {**bearer(made_up_key()), "X-Forwarded-For": forwarded_for or client}
            return get_from("127.0.0.27", server, "/api/users?per_page=1", headers)[0]

        flooder = [through_proxy("198.51.100.7") for _ in range(limit + 5)]
        assert flooder[:limit] == [401] * limit and set(flooder[limit:]) == {429}
        # Another client behind the same proxy is unaffected; a value the flooder puts before the
        # proxy's own (it cannot change what the proxy appends) does not make it someone else.
        assert through_proxy("198.51.100.8") == 401
        assert through_proxy("198.51.100.7", "203.0.113.50, 198.51.100.7") == 429
    finally:
        settings.trusted_proxies = trusted
