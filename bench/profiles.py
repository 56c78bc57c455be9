"""Profile reads over HTTP: cached (X-Cache: HIT) vs uncached (MISS) latency, p50 and p99.

Runs against the running stack: start it with `make dev` (and ideally run `make demo` first so
there are users with a purchase history), then `.venv/bin/python bench/profiles.py`.

How a miss is forced: the analytics worker writes every profile it computes into Redis, so
"a user never read before" is already cached, and an event only opens a short, racy window before
analytics rewrites the entry. The bench therefore does exactly what the event worker does when a
user's events change (shared.pipeline.profile_cache.invalidate: a new cache version for the user in Postgres,
DATABASE_URL as the stack uses it) and then reads the profile: that read misses,
computes from Postgres + MongoDB (the same compute_profiles the worker uses) and caches it; the
reads after it hit. Samples whose X-Cache header is not the expected one are counted and dropped.

The timed reads go over one keep-alive connection with the standard library's http.client, as a
service calling the API would: `requests` adds about a millisecond of its own per call on this
machine, which would measure the client rather than the cache. The HTTP floor (GET /health over
the same connection) is printed alongside, so what the hit costs beyond HTTP is visible. The
floor goes through Flask; a hit does not (services/api/profile_hits.py answers it before Flask
with one Redis read and one Postgres read of the user's cache version), so a hit can come in at
about the floor.

The hits are also timed with a key that has only the `read` scope (created through the API for the
run): its answers leave the person's name, e-mail and street out, cut from the same cached text
(shared.contracts.personal.profile_view). Such a key is rate-limited (RATE_LIMIT_READ), so its hits also pay
the limit's Redis round trips; the development key's do not.

Target: a hit at least 20x faster than a miss at p50.
Env: BENCH_USERS (default 100), BENCH_ROUNDS (misses per user, default 3), BENCH_HITS (hits per
miss, default 3).
"""
from __future__ import annotations

import http.client
import os
import statistics
import time
from urllib.parse import urlsplit

from _common import (
    API,
    LINE,
    BenchError,
    auth_headers,
    call,
    ensure_users,
    percentile,
    require_stack,
    run,
    verdict,
    wait_quiet,
)

TARGET = 20.0


def main() -> None:
    require_stack()
    from shared.pipeline import profile_cache  # after _common put the repo root on sys.path

    n_users = int(os.environ.get("BENCH_USERS", 100))
    rounds = int(os.environ.get("BENCH_ROUNDS", 3))
    hits_per_miss = int(os.environ.get("BENCH_HITS", 3))
    users = ensure_users(n_users)
    waited = wait_quiet()  # an analytics backlog (e.g. after bench/ingestion.py) would skew the misses
    address = urlsplit(API)
    connection = http.client.HTTPConnection(address.hostname, address.port or 80, timeout=60)
    headers = auth_headers()  # the development key: admin, so no rate-limit round trips are measured

    def get(path: str) -> tuple[float, str]:
        start = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        elapsed = (time.perf_counter() - start) * 1000
        if response.status != 200:
            raise BenchError(f"GET {path} answered {response.status}")
        return elapsed, response.getheader("X-Cache", "?")

    def read(user_id: int) -> tuple[float, str]:
        return get(f"/api/users/{user_id}/profile")

    for user_id in users[:10]:  # warm up connections, imports and the per-process population cache
        read(user_id)

    # Each round: every user's profile invalidated and read once (misses), then read again
    # BENCH_HITS times (hits). Misses and hits are timed in separate passes, each in its steady
    # state: a hit timed right after a miss would also pay for the garbage the miss left behind.
    misses, hits, unexpected = [], [], 0
    started = time.perf_counter()
    for _ in range(rounds):
        for user_id in users:
            profile_cache.invalidate([user_id])
            ms, header = read(user_id)
            if header == "MISS":
                misses.append(ms)
            else:
                unexpected += 1
        for _ in range(hits_per_miss):
            for user_id in users:
                ms, header = read(user_id)
                if header == "HIT":
                    hits.append(ms)
                else:
                    unexpected += 1
    elapsed = time.perf_counter() - started
    floor = [get("/health")[0] for _ in range(len(hits))]
    # The same hits with a read-only key (pseudonymous answers), within its rate limit.
    read_key = call("POST", "/api/keys", expect=(201,), json={"scopes": ["read"], "name": "bench-profiles"}).json()
    headers_admin, headers = headers, {"Authorization": f"Bearer {read_key['key']}"}
    read_hits = []
    try:
        for user_id in users[:min(len(users), 200)]:
            for _ in range(hits_per_miss):
                ms, header = read(user_id)
                if header == "HIT":
                    read_hits.append(ms)
    finally:
        headers = headers_admin
        call("DELETE", f"/api/keys/{read_key['id']}", expect=(204, 200))

    m50, m99, h50, h99 = (percentile(misses, 50), percentile(misses, 99), percentile(hits, 50), percentile(hits, 99))
    print(LINE)
    print("bench/profiles.py — GET /api/users/<id>/profile over HTTP, one client, sequential")
    print(LINE)
    print(f"users: {len(users)}, rounds: {rounds}, samples: {len(misses)} misses, {len(hits)} hits "
          f"({unexpected} dropped with an unexpected X-Cache), {elapsed:.1f}s "
          f"(after {waited:.0f}s waiting for a quiet stack)")
    print(f"MISS (computed: Postgres + MongoDB + analytics): p50 {m50:8.2f} ms   p99 {m99:8.2f} ms   "
          f"mean {statistics.fmean(misses):8.2f} ms")
    print(f"HIT  (Redis body, Postgres version):             p50 {h50:8.2f} ms   p99 {h99:8.2f} ms   "
          f"mean {statistics.fmean(hits):8.2f} ms")
    if read_hits:
        print(f"HIT  (read-only key, personal fields cut):       p50 {percentile(read_hits, 50):8.2f} ms   "
              f"p99 {percentile(read_hits, 99):8.2f} ms   ({len(read_hits)} samples)")
    print(f"HTTP floor (GET /health, same connection):     p50 {percentile(floor, 50):8.2f} ms   "
          f"p99 {percentile(floor, 99):8.2f} ms")
    print(f"hit vs miss: {m50 / h50:.1f}x faster at p50, {m99 / h99:.1f}x at p99")
    print(f"target: hit >= {TARGET:.0f}x faster than miss at p50 -> {verdict(m50 / h50 >= TARGET)}")


if __name__ == "__main__":
    run(main)
