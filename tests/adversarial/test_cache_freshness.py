"""Promise (docs/faults.md, "Profiles are never stale"): a cached profile is served only while it is
current, and an erased person is never served from the cache, whatever Redis does.

Each test attacks over HTTP with what an operator's Redis does by itself: a restore from an older
snapshot (every key Pulse holds DUMPed earlier and RESTOREd), FLUSHALL, a restart without
persistence, and a failover to a replica that missed the last writes. Each one brings back, or
takes away, the profiles cached earlier (and with the old design their version counters, which is
what made an old profile current again).
"""
import os

import pytest
import redis as redis_lib
import requests

from scripts.private_servers import ApiServer, PrivateRedis
from shared.pipeline.profile_cache import PROFILE_SHAPE
from tests.adversarial.redis_snapshots import roll_back, snapshot
from tests.conftest import TEST_ENV
from tests.fixtures import wait_for
from tests.helpers import purchase, serve, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


@pytest.fixture(scope="module")
def server(app):
    with serve(app) as url:
        yield url


@pytest.fixture()
def http():
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {os.environ['PULSE_API_KEY']}"
    yield session
    session.close()


@pytest.fixture(scope="module")
def redis():
    client = redis_lib.Redis.from_url(TEST_ENV["REDIS_URL"])
    yield client
    client.close()


@pytest.fixture(scope="module", autouse=True)
def rescoring_healed_after_the_module():
    """Leave the run's pipeline as beat would within a minute. A rollback can restore the "drain
    scheduled" flag of a drain that already ran, and then no change schedules one until the flag's
    TTL; in production beat's rescoring sweep heals that, and this session runs no beat. So the
    flag goes and a drain of whatever is pending is sent, as the sweep would."""
    yield
    from shared.contracts.topology import COMPUTE_PROFILES
    from shared.infra.cache import get_redis, key
    from shared.infra.celery_app import create_celery_app

    get_redis().delete(key("rescore", "scheduled"))
    app = create_celery_app("pulse-test-cache-freshness")
    app.send_task(COMPUTE_PROFILES)
    app.close()


def customer(http, base: str, price: float) -> int:
    user_id = http.post(f"{base}/api/users/signup", json=signup_body(), timeout=30).json()["id"]
    buy(http, base, user_id, price, spent=price)
    return user_id


def buy(http, base: str, user_id: int, price: float, spent: float) -> None:
    """Send a purchase and wait until it is stored: the worker's transaction committed, which the
    purchase timeline (the same transaction's rows) shows; the profile is not read meanwhile."""
    assert http.post(f"{base}/api/events", json=purchase(user_id, price, "Books"), timeout=30).status_code == 202
    wait_for(lambda: sum(d["spent"] for d in http.get(f"{base}/api/users/{user_id}/purchases", timeout=30)
                         .json()["items"]) == spent,
             timeout=60, what=f"the purchases of {user_id} to add up to {spent}")


def profile(http, base: str, user_id: int) -> tuple[float, str]:
    response = http.get(f"{base}/api/users/{user_id}/profile", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["totals"]["total_spent"], response.headers["X-Cache"]


def cached_hit(http, base: str, user_id: int, spent: float) -> None:
    """Read until the profile is a cache hit (the second read at the latest), showing `spent`."""
    def hit():
        total, cache = profile(http, base, user_id)
        assert total == spent, (total, cache)
        return cache == "HIT"
    wait_for(hit, timeout=30, what=f"a cached profile of {user_id}")


def test_a_redis_restored_from_an_older_snapshot_never_serves_a_stale_profile(server, http, redis):
    user_id = customer(http, server, 100.0)
    cached_hit(http, server, user_id, 100.0)
    taken = snapshot(redis)  # holds the profile that says 100

    buy(http, server, user_id, 250.0, spent=350.0)
    cached_hit(http, server, user_id, 350.0)
    roll_back(redis, taken)  # the profile that says 100 is back, with whatever was beside it
    assert redis.get(f"{TEST_ENV['CACHE_PREFIX']}profile:{PROFILE_SHAPE}:{user_id}") is not None

    # The restored profile is not current: computed again (or the one analytics cached since, a
    # rescoring may land meanwhile), never the one that says 100.
    for _ in range(3):
        assert profile(http, server, user_id)[0] == 350.0
    assert profile(http, server, user_id) == (350.0, "HIT")


def test_an_erased_person_is_never_served_from_a_restored_cache(server, http, redis, mongo):
    user_id = customer(http, server, 120.0)
    cached_hit(http, server, user_id, 120.0)
    key = f"{TEST_ENV['CACHE_PREFIX']}profile:{PROFILE_SHAPE}:{user_id}"
    taken = snapshot(redis)
    assert key.encode() in taken  # the snapshot holds their cached profile

    assert http.delete(f"{server}/api/users/{user_id}", timeout=30).status_code == 202
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id}) == 0, timeout=60,
             what="the worker's erasure in MongoDB and Redis")
    roll_back(redis, taken)  # the person's cached profile is back in Redis
    restored = redis.get(key)
    assert restored is not None and b'"username"' in restored

    for _ in range(3):
        answer = http.get(f"{server}/api/users/{user_id}/profile", timeout=30)
        assert answer.status_code == 404, answer.text
        assert answer.headers["Content-Type"] == "application/problem+json" and "username" not in answer.text


@pytest.fixture()
def private_redis():
    servers = []

    def start() -> tuple[PrivateRedis, redis_lib.Redis]:
        server = PrivateRedis().start()
        servers.append(server)
        return server, redis_lib.Redis.from_url(server.url)

    yield start
    for server in servers:
        server.remove()


@pytest.fixture()
def api_processes():
    started = []

    def start(**env) -> ApiServer:
        process = ApiServer(env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.remove()


def test_flushall_a_restart_without_persistence_and_a_failover_never_serve_a_stale_profile(
        http, private_redis, api_processes):
    primary, primary_client = private_redis()
    api = api_processes(REDIS_URL=primary.url)  # its cache is this Redis of our own
    user_id = customer(http, api.url, 100.0)
    cached_hit(http, api.url, user_id, 100.0)

    primary_client.flushall()
    assert profile(http, api.url, user_id) == (100.0, "MISS")
    cached_hit(http, api.url, user_id, 100.0)

    primary.restart()  # no persistence: it comes back empty
    assert profile(http, api.url, user_id)[0] == 100.0  # computed (MISS, or BYPASS while reconnecting)
    cached_hit(http, api.url, user_id, 100.0)

    # A replica in sync with the primary (it holds the profile that says 100) stops following it
    # and so misses the writes that come next: the cached profile that says 350.
    replica, replica_client = private_redis()
    replica_client.replicaof("127.0.0.1", primary.port)
    key = f"{TEST_ENV['CACHE_PREFIX']}profile:{PROFILE_SHAPE}:{user_id}"
    wait_for(lambda: replica_client.get(key) == primary_client.get(key), timeout=30, what="the replica in sync")
    replica_client.replicaof("NO", "ONE")
    buy(http, api.url, user_id, 250.0, spent=350.0)
    cached_hit(http, api.url, user_id, 350.0)
    assert replica_client.get(key) is not None and replica_client.get(key) != primary_client.get(key)

    # Failover: the primary is gone, the API's Redis is now the replica.
    primary.stop()
    api.stop()
    failed_over = api_processes(REDIS_URL=replica.url)
    assert profile(http, failed_over.url, user_id) == (350.0, "MISS")
    cached_hit(http, failed_over.url, user_id, 350.0)
