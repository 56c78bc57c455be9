"""Signup throughput over HTTP, against the API server's own floor measured in the same run.

Runs against the running stack (`make dev`), with the development key (an admin key: not rate
limited, as a backfill or an import would call):

  signups  BENCH_SIGNUPS (default 2000) POST /api/users/signup of new users from BENCH_CLIENTS
           (default 8) client threads, each answered 201 (user, address and outbox row committed);
  floor    as many GET /health from the same clients: the HTTP server, Flask and the key check,
           with no store touched. signups / floor says what a signup costs beyond a request.

Rounds alternate (floor first in even rounds) and are summed, because the machine's speed drifts.
The users stay (`bench.signup.<run>.<i>` in Tallinn, EE) and get their welcome e-mail and profile
like any signup; the bench does not wait for those.
"""
from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from _common import API, LINE, BenchError, percentile, require_stack, run, session, wait_quiet

ROUNDS = 4


def measure(clients: int, requests: list[tuple[str, str, dict | None, int]]) -> tuple[float, list[float]]:
    http = session(pool=clients)
    latencies: list[float] = []

    def one(request: tuple[str, str, dict | None, int]) -> None:
        method, path, body, expected = request
        started = time.perf_counter()
        response = http.request(method, API + path, json=body, timeout=60)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != expected:
            raise BenchError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, requests))
    return time.perf_counter() - started, latencies


def main() -> None:
    require_stack()
    n = int(os.environ.get("BENCH_SIGNUPS", 2000))
    clients = int(os.environ.get("BENCH_CLIENTS", 8))
    run_id = uuid.uuid4().hex[:8]

    def signup(i: int) -> tuple[str, str, dict, int]:
        name = f"bench.signup.{run_id}.{i}"
        return ("POST", "/api/users/signup", {
            "username": name, "email": f"{name}@example.com", "full_name": f"Signup Bench {i}",
            "address": {"street": f"Bench Street {i}", "city": "Tallinn", "country_code": "EE"}}, 201)

    signups = [signup(i) for i in range(n)]
    floor = [("GET", "/health", None, 200)] * n
    waited = wait_quiet()
    signup_s = floor_s = 0.0
    signup_ms: list[float] = []
    floor_ms: list[float] = []
    for index in range(ROUNDS):
        part = slice(index, None, ROUNDS)
        for phase in (("floor", "signups") if index % 2 == 0 else ("signups", "floor")):
            if phase == "floor":
                seconds, latencies = measure(clients, floor[part])
                floor_s, floor_ms = floor_s + seconds, floor_ms + latencies
            else:
                seconds, latencies = measure(clients, signups[part])
                signup_s, signup_ms = signup_s + seconds, signup_ms + latencies
    print(LINE)
    print(f"bench/signups.py — run {run_id}: {n} signups and {n} GET /health in {ROUNDS} alternating rounds, "
          f"{clients} client threads; {waited:.0f}s spent waiting for a quiet stack")
    print(LINE)
    print(f"signups  POST /api/users/signup -> 201 : {signup_s:7.2f} s  {n / signup_s:8,.0f} signups/s   "
          f"p50 {percentile(signup_ms, 50):6.2f} ms  p99 {percentile(signup_ms, 99):6.2f} ms")
    print(f"floor    GET /health -> 200             : {floor_s:7.2f} s  {n / floor_s:8,.0f} requests/s  "
          f"p50 {percentile(floor_ms, 50):6.2f} ms  p99 {percentile(floor_ms, 99):6.2f} ms")
    print(f"signups / floor = {(n / signup_s) / (n / floor_s):.2f}x   (a signup: two SELECTs, four INSERTs, one "
          f"commit beyond a request)")


if __name__ == "__main__":
    run(main)
