"""What the metrics cost: the same requests to an API with metrics on and to one with them off,
side by side in one run.

Runs against the running stack (`make dev`). The bench starts two API servers like the
Procfile's (granian, API_WORKERS processes) on free ports, one with metrics on (the default) and
one with METRICS_ENABLED=false, against the stack's Postgres, Redis, RabbitMQ, MongoDB and
workers, and stops them at the end. (Measuring the stack's own API against a second one measured
honcho's output pipe and the API's age too: accepted batches came out 15% apart in two runs,
where the same two servers started alike showed no difference.) Rounds alternate which API goes
first, and the figures are summed, because the machine's speed drifts:

  profile hits  BENCH_HITS (default 2000) cached-profile reads per API and round over one
                keep-alive connection: p50 and p99 (the cost a scrape-ready counter adds to the
                cheapest request);
  ingestion     BENCH_EVENTS (default 40000) events per API in batches of 1000 from 4 client
                threads, timed until every batch is answered 202 (the API's share) and until the
                worker has stored them all (the pipeline, whose worker is the same for both:
                polled on its Redis total, checked against MongoDB once at the end).

Targets (issue 12): with metrics, the profile-hit p50 within 10% and ingestion within 5% of
without. Uses the development key (admin: no rate-limit round trips in either).
"""
from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import urlsplit

from _common import (
    LINE,
    ROOT,
    BenchError,
    auth_headers,
    bench_users,
    call,
    percentile,
    require_stack,
    run,
    session,
    verdict,
    wait_quiet,
)

from scripts.lifetime import end, start  # noqa: E402 - after _common puts the repository root on sys.path

ROUNDS = 4
BATCH = 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(metrics: bool, multiproc_dir: str) -> tuple[subprocess.Popen, str]:
    """An API server like the Procfile's, metrics on (with a fresh PROMETHEUS_MULTIPROC_DIR, as
    the Procfile empties it at each start) or off. Both are started the same way by this bench, so
    they differ in METRICS_ENABLED alone (not in where their output goes or how long they ran)."""
    port = free_port()
    env = {**os.environ, "METRICS_ENABLED": "true" if metrics else "false"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if metrics:
        env["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    # A group of its own that dies with this process (scripts/lifetime.py).
    process = start(
        [str(ROOT / ".venv/bin/granian"), "--interface", "wsgi", "--no-ws", "--host", "127.0.0.1", "--port", str(port),
         "--workers", os.environ.get("API_WORKERS", "2"), "--blocking-threads", "4", "services.api.wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if session().get(f"{url}/health", timeout=1).ok:
                return process, url
        except Exception:  # not listening yet
            pass
        time.sleep(0.2)
    end(process, grace=0)
    raise BenchError(f"the API with METRICS_ENABLED={metrics} did not start")


def cache(users: list[int]) -> None:
    """Read each profile until the cache holds it (a rescoring may have just rewritten it)."""
    for user_id in users:
        deadline = time.monotonic() + 30
        while call("GET", f"/api/users/{user_id}/profile").headers.get("X-Cache") != "HIT":
            if time.monotonic() > deadline:
                raise BenchError(f"the profile of {user_id} is not cached after 30 s")


def hits(url: str, users: list[int], n: int) -> list[float]:
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    headers = auth_headers()
    times = []
    for i in range(n):
        path = f"/api/users/{users[i % len(users)]}/profile"
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        times.append((time.perf_counter() - started) * 1000)
        if response.status != 200 or response.getheader("X-Cache") != "HIT":
            raise BenchError(f"{url}{path} answered {response.status} {response.getheader('X-Cache')}")
    connection.close()
    return times


def ingest(url: str, users: list[int], n: int, db, tag: str) -> tuple[float, float]:
    """(seconds until every batch was answered 202, seconds until all were in MongoDB)."""
    now = datetime.now(UTC).isoformat()
    events = [{"event_id": f"cost-{tag}-{i}", "user_id": users[i % len(users)], "event_type": "page_view",
               "timestamp": now, "metadata": {"page": "/cost"}} for i in range(n)]
    batches = [events[i:i + BATCH] for i in range(0, n, BATCH)]
    from shared.infra import counters

    http = session(pool=4)
    stored_before = counters.read()[counters.EVENTS_STORED]
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda b: http.post(f"{url}/api/events/batch", json={"events": b}, timeout=60),
                                batches))
    accepted = time.perf_counter() - started
    if any(a.status_code != 202 for a in answers):
        raise BenchError(f"a batch to {url} was refused: {[a.status_code for a in answers]}")
    # Completion from the worker's own total (one Redis read per poll): polling MongoDB for the ids
    # would compete with the worker for the dev server and measure the polling.
    while counters.read()[counters.EVENTS_STORED] < stored_before + n:
        if time.perf_counter() - started > 600:
            raise BenchError("events not stored after 10 minutes")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    ids_by_user: dict[int, list[str]] = {}
    for e in events:
        ids_by_user.setdefault(e["user_id"], []).append(e["event_id"])
    # One count per user: an exact range of the unique index `(user_id, event_id)` each (an `$in` on
    # both fields at once is a cross product the dev server takes tens of seconds over).
    if sum(db.events.count_documents({"user_id": u, "event_id": {"$in": ids}}) for u, ids in ids_by_user.items()) != n:
        raise BenchError(f"the worker counted {n} events of {tag}, MongoDB holds fewer")
    return accepted, elapsed


def main() -> None:
    from shared.infra.mongo import get_database

    require_stack()
    n_hits = int(os.environ.get("BENCH_HITS", 2000))
    n_events = int(os.environ.get("BENCH_EVENTS", 40_000))
    run_id = uuid.uuid4().hex[:8]
    users = bench_users(200)
    readers, writers = users[:50], users[50:]  # events never invalidate the profiles the hits read
    db = get_database()
    multiproc_dir = tempfile.mkdtemp(prefix="pulse-bench-metrics-")
    processes, apis = [], {}
    hit_ms = {"on": [], "off": []}
    accepted_s = {"on": 0.0, "off": 0.0}
    stored_s = {"on": 0.0, "off": 0.0}
    try:
        for which in ("on", "off"):
            process, apis[which] = start_api(which == "on", multiproc_dir)
            processes.append(process)
        waited = wait_quiet()
        for index in range(ROUNDS):
            order = ("on", "off") if index % 2 == 0 else ("off", "on")
            cache(readers)
            for which in order:
                hit_ms[which] += hits(apis[which], readers, n_hits // ROUNDS)
            for which in order:
                waited += wait_quiet()
                accepted, stored = ingest(apis[which], writers, n_events // ROUNDS, db, f"{run_id}-{index}-{which}")
                accepted_s[which] += accepted
                stored_s[which] += stored
    finally:
        for process in processes:
            end(process, grace=30)
        shutil.rmtree(multiproc_dir, ignore_errors=True)

    p50 = {k: percentile(v, 50) for k, v in hit_ms.items()}
    p99 = {k: percentile(v, 99) for k, v in hit_ms.items()}
    print(LINE)
    print(f"bench/metrics_cost.py — run {run_id}: {n_hits} profile hits and {n_events} events per API, {ROUNDS} "
          f"alternating rounds; {waited:.0f}s spent waiting for a quiet stack")
    print(LINE)
    print(f"{'':28}{'metrics on':>14}{'metrics off':>14}{'on / off':>10}")
    print(f"{'profile hit p50 (ms)':28}{p50['on']:14.3f}{p50['off']:14.3f}{p50['on'] / p50['off']:10.3f}")
    print(f"{'profile hit p99 (ms)':28}{p99['on']:14.3f}{p99['off']:14.3f}{p99['on'] / p99['off']:10.3f}")
    rate = {k: n_events / v for k, v in accepted_s.items()}
    print(f"{'events accepted (events/s)':28}{rate['on']:14,.0f}{rate['off']:14,.0f}{rate['on'] / rate['off']:10.3f}")
    stored = {k: n_events / v for k, v in stored_s.items()}
    print(f"{'events stored (events/s)':28}{stored['on']:14,.0f}{stored['off']:14,.0f}"
          f"{stored['on'] / stored['off']:10.3f}")
    print(f"profile-hit p50 with metrics within 10% of without: {verdict(p50['on'] <= 1.10 * p50['off'])}")
    print(f"ingestion (stored) with metrics within 5% of without: {verdict(stored['on'] >= 0.95 * stored['off'])}")


if __name__ == "__main__":
    run(main)
