"""Helpers shared by the benchmarks in bench/ (run as `python bench/<name>.py` from the repo root).

The benchmarks measure the running `make dev` stack over HTTP (PULSE_API, default
http://127.0.0.1:8000) and read the stack's own settings (MONGO_URI, REDIS_URL, BROKER_URL,
CACHE_PREFIX from the environment or `.env`) for the few things that are not in the API.
"""
from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo root
    sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # settings read `.env` relative to the working directory

from scripts.stack_client import API, StackError, auth_headers, call, require_stack, session  # noqa: E402,F401

LINE = "=" * 78


BenchError = StackError


def bench_users(n: int, city: str = "Tallinn", country: str = "EE") -> list[int]:
    """Ids of `n` dedicated bench users (`bench.user.NNNN` in Tallinn, EE), signed up when missing.

    Dedicated users keep the bench's events off the demo's users (their profiles, event counts and
    cache-miss times stay as the demo made them); they show up as one more country in /api/stats.
    """
    def listed() -> dict[str, int]:
        found, page = {}, 1
        while True:
            body = call("GET", "/api/users", params={"country": country, "city": city, "page": page,
                                                      "per_page": 500}).json()
            found.update({u["username"]: u["id"] for u in body["items"]})
            if not body["items"] or page * body["per_page"] >= body["total"]:
                return found
            page += 1

    wanted = [f"bench.user.{i:04d}" for i in range(n)]
    found = listed()
    missing = [name for name in wanted if name not in found]

    def signup(name: str) -> None:
        call("POST", "/api/users/signup", expect=(201, 409), json={
            "username": name, "email": f"{name}@example.com", "full_name": f"Bench User {name[-4:]}",
            "address": {"street": f"Bench Street {int(name[-4:])}", "city": city, "country_code": country}})

    if missing:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(signup, missing))
        found = listed()
    ids = [found[name] for name in wanted if name in found]
    if len(ids) < n:
        raise BenchError(f"could not find or create {n} bench users in {city}, {country} (have {len(ids)})")
    return ids


def queue_depths(names: list[str]) -> dict[str, int]:
    """Ready messages per RabbitMQ queue (passive declare; the stack's BROKER_URL)."""
    from kombu import Connection

    from shared.contracts.settings import get_settings

    with Connection(get_settings().broker_url) as conn:
        channel = conn.default_channel
        return {name: channel.queue_declare(queue=name, passive=True).message_count for name in names}


def _busy(nodes: list[str]) -> dict[str, int]:
    """What the stack still has to do: ready messages per work queue, tasks running on its
    workers (a running or countdown-delayed task is unacked, so the queue alone looks empty),
    and users waiting for a rescoring drain."""
    from celery import Celery

    from shared.contracts.settings import get_settings
    from shared.pipeline import rescore

    settings = get_settings()
    prefix = settings.queue_prefix
    busy = queue_depths([f"{prefix}.events", f"{prefix}.analytics", f"{prefix}.users"])
    inspect = Celery(broker=settings.broker_url).control.inspect(destination=nodes, limit=len(nodes), timeout=2.0)
    busy["running tasks"] = sum(len(tasks) for tasks in (inspect.active() or {}).values())
    busy["delayed tasks"] = sum(len(tasks) for tasks in (inspect.scheduled() or {}).values())
    busy["users to rescore"] = rescore.pending_count()
    return busy


def wait_quiet(timeout: float = 600) -> float:
    """Wait until the stack has had nothing to do for 3 s (an earlier phase's analytics backlog
    would otherwise compete for MongoDB with what we measure). Returns the seconds waited."""
    from celery import Celery

    from shared.contracts.settings import get_settings

    start = time.monotonic()
    nodes = [name for reply in Celery(broker=get_settings().broker_url).control.ping(timeout=2.0) for name in reply]
    quiet_since = None
    while time.monotonic() - start < timeout:
        if sum(_busy(nodes).values()) == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 3:
                return time.monotonic() - start
        else:
            quiet_since = None
        time.sleep(0.5)
    print(f"warning: the stack was still busy after {timeout:.0f}s: {_busy(nodes)}")
    return time.monotonic() - start


def ensure_users(n: int) -> list[int]:
    """Ids of `n` existing users (the demo's, when it has run); signs up bench users for the rest."""
    ids: list[int] = []
    page = 1
    while len(ids) < n:
        body = call("GET", "/api/users", params={"page": page, "per_page": 500}).json()
        ids.extend(u["id"] for u in body["items"])
        if not body["items"] or page * body["per_page"] >= body["total"]:
            break
        page += 1
    missing = n - len(ids)
    if missing > 0:
        def signup(i: int) -> int:
            name = f"bench.user.{i:04d}"
            r = call("POST", "/api/users/signup", expect=(201, 409), json={
                "username": name, "email": f"{name}@example.com", "full_name": f"Bench User {i}",
                "address": {"street": f"Bench Street {i}", "city": "Kyiv", "country_code": "UA"}})
            return r.json()["id"] if r.status_code == 201 else -1
        with ThreadPoolExecutor(8) as pool:
            created = [i for i in pool.map(signup, range(len(ids), len(ids) + missing)) if i > 0]
        ids.extend(created)
        if len(ids) < n:  # bench users from an earlier run that were not in the first pages
            return ensure_users_again(n)
    return ids[:n]


def ensure_users_again(n: int) -> list[int]:
    body = call("GET", "/api/users", params={"page": 1, "per_page": 500}).json()
    ids = [u["id"] for u in body["items"]]
    if len(ids) < n:
        raise BenchError(f"could not find or create {n} users (have {len(ids)})")
    return ids[:n]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def run(main) -> None:
    # `kill` or a hang-up ends a benchmark through its `finally:` clean-up (the processes it
    # started, the folders it made), as Ctrl-C does.
    from scripts.lifetime import exit_on_signals

    exit_on_signals()
    try:
        main()
    except BenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        sys.exit(1)
