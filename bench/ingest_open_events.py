"""Ingestion of the open event model against today's events, measured in the same run.

Starts a private stack of its own from the Procfile (honcho: SecantusDB on a free port, the API
and the worker), with its own Postgres database, RabbitMQ vhost and queue prefix and Redis prefix,
so nothing of `make dev` is touched, and everything is removed when it ends. Then, alternating over
BENCH_ROUNDS rounds (the order flipped each round, since a small stack's speed drifts):

  baseline  N built-in events (page views, searches, add-to-carts) of known users, POSTed to
            /api/events/batch in batches of BENCH_BATCH by BENCH_CLIENTS threads, timed until the
            worker has stored all of them (its events_stored counter);
  open      the same, with half of the events custom (`video_played`, `trial_started`) with
            metadata the tracking plan's schemas validate (nested objects, arrays, a pattern,
            required fields), BENCH_FLAGGED of them (default 1%) breaking their `flag` entry's
            schema, so stored with violations and recorded in Postgres;
  unplanned the same events as `open`, the custom ones under names with no plan entry (accepted
            without validation): what validating and recording cost, apart from the custom
            events' own (larger, nested) documents.

Prints events/s of each (summed over rounds), the ratio open/baseline (target >= 0.9x, issue 23) and
open/unplanned.

BENCH_ANONYMOUS=1 sends the custom half with an `anonymous_id` instead of a `user_id` (visitors:
needs the anonymous_id of issue 23's visitors, built in parallel; without it the API refuses them).
Env: BENCH_EVENTS (default 20000 per phase and round), BENCH_ROUNDS (2), BENCH_BATCH (500),
BENCH_CLIENTS (4), BENCH_USERS (200), BENCH_FLAGGED (0.01).
`.venv/bin/python bench/ingest_open_events.py`
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = uuid.uuid4().hex[:8]
VAR = Path(tempfile.mkdtemp(prefix="pulse-open-events-"))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORTS = {name: _free_port() for name in ("API_PORT", "MONGO")}
PG_SERVER = os.environ.get("BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
RABBIT = os.environ.get("BENCH_RABBIT", "guest:guest@127.0.0.1:5672")
VHOST = f"pulse_open_{RUN}"
STACK_ENV = {
    "DATABASE_URL": f"{PG_SERVER}/pulse_open_{RUN}",
    "BROKER_URL": f"amqp://{RABBIT}/{VHOST}",
    "RESULT_BACKEND": os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0"),
    "REDIS_URL": os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0"),
    "MONGO_URI": f"mongodb://127.0.0.1:{PORTS['MONGO']}/pulse_open",
    "QUEUE_PREFIX": f"pulse_open_{RUN}",
    "CACHE_PREFIX": f"pulse-open-{RUN}:",
    "PULSE_VAR_DIR": str(VAR),
    "API_PORT": str(PORTS["API_PORT"]),
    "PULSE_API": f"http://127.0.0.1:{PORTS['API_PORT']}",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(STACK_ENV)  # before any Pulse module reads its settings
os.environ.pop("PULSE_API_KEY", None)  # the stack's own development key is the one to send
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

from _common import LINE, BenchError, run, verdict  # noqa: E402

from scripts.lifetime import die_with_parent, end, start  # noqa: E402
from scripts.stack_client import call, session  # noqa: E402

EVENTS = int(os.environ.get("BENCH_EVENTS", 20000))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 2))
BATCH = int(os.environ.get("BENCH_BATCH", 500))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", 4))
USERS = int(os.environ.get("BENCH_USERS", 200))
FLAGGED = float(os.environ.get("BENCH_FLAGGED", 0.01))
ANONYMOUS = os.environ.get("BENCH_ANONYMOUS", "") == "1"
STACK_PROCESSES = ["mongo", "api", "worker"]

PLAN = {
    "video_played": ({
        "type": "object", "required": ["video_id", "seconds", "player"], "additionalProperties": False,
        "properties": {
            "video_id": {"type": "string", "pattern": "^v-[0-9]+$"},
            "seconds": {"type": "number", "minimum": 0},
            "player": {"type": "object", "required": ["size"],
                       "properties": {"size": {"enum": ["s", "m", "l"]}, "muted": {"type": "boolean"}}},
            "chapters": {"type": "array", "maxItems": 20, "items": {"type": "integer", "minimum": 0}},
        },
    }, "refuse"),
    "trial_started": ({
        "type": "object", "required": ["plan"],
        "properties": {"plan": {"enum": ["basic", "pro", "team"]}, "seats": {"type": "integer", "minimum": 1},
                       "source": {"type": "string", "maxLength": 100}},
    }, "flag"),
}


class Stack:
    def __init__(self) -> None:
        self.honcho: subprocess.Popen | None = None
        self.log = VAR / "stack.log"

    def start(self) -> None:
        env = {**os.environ, **STACK_ENV}
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", VHOST], check=True, capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", VHOST, RABBIT.split(":")[0], ".*", ".*", ".*"],
                       check=True, capture_output=True)
        subprocess.run([str(ROOT / ".venv/bin/pulse"), "migrate"], env=env, check=True, cwd=ROOT,
                       preexec_fn=die_with_parent(), capture_output=True)
        subprocess.run([str(ROOT / ".venv/bin/pulse"), "keys", "dev", str(VAR / "dev-api-key")],
                       env=env, check=True, cwd=ROOT, capture_output=True, preexec_fn=die_with_parent())
        with open(self.log, "wb") as log:
            self.honcho = start([str(ROOT / ".venv/bin/honcho"), "start", "-f", "Procfile", *STACK_PROCESSES],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if call("GET", "/health/ready", expect=(200, 503), timeout=2).json()["status"] == "ok" \
                        and self.workers() >= 1:
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(1)
        raise BenchError(f"the private stack did not come up (log: {self.log})")

    @staticmethod
    def workers() -> int:
        from celery import Celery

        from shared.contracts.settings import get_settings

        return len(Celery(broker=get_settings().broker_url).control.ping(timeout=1.0))

    def stop(self) -> None:
        errors = []
        if self.honcho is not None:
            end(self.honcho, grace=30, first=signal.SIGINT)
        try:
            from shared.infra.db import drop_database

            drop_database(STACK_ENV["DATABASE_URL"])
        except Exception as exc:  # noqa: BLE001 - the vhost, the keys and the folder go anyway
            errors.append(f"database: {exc!r}")
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", VHOST], check=False, capture_output=True, timeout=120)
        try:
            from shared.infra.cache import get_redis

            redis = get_redis()
            for name in redis.scan_iter(match=STACK_ENV["CACHE_PREFIX"] + "*", count=10_000):
                redis.delete(name)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"redis keys: {exc!r}")
        shutil.rmtree(VAR, ignore_errors=True)
        if errors:
            print("clean-up incomplete: " + "; ".join(errors), file=sys.stderr)


def make_users(n: int) -> list[int]:
    """`n` users straight into Postgres (signups would cost the run outbox, worker and mail work)."""
    from sqlalchemy import text

    from shared.infra.db import session_scope

    with session_scope() as s:
        s.execute(text("INSERT INTO cities (name, country_id) SELECT 'Tallinn', id FROM countries WHERE code = 'EE'"))
        address = s.scalar(text("INSERT INTO addresses (street, city_id) SELECT 'Bench Street', id FROM cities "
                                "WHERE name = 'Tallinn' RETURNING id"))
        return list(s.scalars(text(
            "INSERT INTO users (username, email, full_name, address_id) SELECT 'bench' || g, "
            "'bench' || g || '@bench.example', 'Bench User', :address FROM generate_series(1, :n) g RETURNING id"),
            {"address": address, "n": n}))


def built_in(rng: random.Random, user_id: int, event_id: str) -> dict:
    kind = rng.choices(["page_view", "search", "add_to_cart"], [70, 15, 15])[0]
    if kind == "add_to_cart":
        metadata: dict = {"product_id": f"P-{rng.randint(1, 999)}", "category": rng.choice(["books", "home", "toys"]),
                          "price": round(rng.uniform(1, 200), 2)}
    elif kind == "search":
        metadata = {"query": rng.choice(["lamp", "novel", "lego"]), "results": rng.randint(0, 50)}
    else:
        metadata = {"page": f"/p/{rng.randint(1, 500)}", "referrer": "ads", "ms": rng.randint(10, 900)}
    return {"event_id": event_id, "user_id": user_id, "event_type": kind, "metadata": metadata}


def custom(rng: random.Random, user_id: int, event_id: str, suffix: str = "") -> dict:
    if rng.random() < 0.5:
        event = {"event_type": "video_played", "metadata": {
            "video_id": f"v-{rng.randint(1, 9999)}", "seconds": round(rng.uniform(0, 3600), 1),
            "player": {"size": rng.choice("sml"), "muted": rng.random() < 0.3},
            "chapters": [rng.randint(0, 3600) for _ in range(rng.randint(0, 6))]}}
    else:
        event = {"event_type": "trial_started", "metadata": {
            "plan": rng.choice(["basic", "pro", "team"]), "seats": rng.randint(1, 50), "source": "ads"}}
        if rng.random() < FLAGGED * 2:  # of the custom half: FLAGGED of all events
            event["metadata"]["seats"] = 0  # breaks `minimum`: stored, flagged, recorded
    who = {"anonymous_id": f"visitor-{user_id}-{RUN}"} if ANONYMOUS else {"user_id": user_id}
    event["event_type"] += suffix
    return {"event_id": event_id, **who, **event}


def make_events(phase: str, round_no: int, n: int, users: list[int]) -> list[dict]:
    rng = random.Random(f"{phase}{round_no}")
    events = []
    for i in range(n):
        event_id = f"{phase}-{round_no}-{i}"
        user = rng.choice(users)
        if phase != "baseline" and i % 2:
            # "unplanned": the same custom events under names with no plan entry (accepted unvalidated).
            events.append(custom(rng, user, event_id, "_raw" if phase == "unplanned" else ""))
        else:
            events.append(built_in(rng, user, event_id))
    return events


def stored_total() -> int:
    from shared.infra import counters

    return counters.read()[counters.EVENTS_STORED]


def ingest(events: list[dict]) -> float:
    """Seconds from the first POST until the worker has stored every event."""
    batches = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    http = session(pool=CLIENTS)
    before = stored_total()
    started = time.perf_counter()

    def post(batch: list[dict]) -> None:
        call("POST", "/api/events/batch", json={"events": batch}, expect=(202,), http=http)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(post, batches))
    deadline = time.monotonic() + 600
    while stored_total() - before < len(events):
        if time.monotonic() > deadline:
            raise BenchError(f"only {stored_total() - before} of {len(events)} events stored after 600 s")
        time.sleep(0.02)
    return time.perf_counter() - started


def main() -> None:
    stack = Stack()
    try:
        print(LINE)
        print(f"ingestion: built-in events vs half custom ({'anonymous, ' if ANONYMOUS else ''}validated against "
              f"plan schemas, {FLAGGED:.0%} flagged); {EVENTS:,} events x {ROUNDS} rounds per phase, batches of "
              f"{BATCH}, {CLIENTS} clients")
        print(LINE)
        stack.start()
        for name, (schema, on_violation) in PLAN.items():
            call("PUT", f"/api/tracking-plan/event-types/{name}", json={"schema": schema, "on_violation": on_violation},
                 expect=(201,))
        users = make_users(USERS)
        ingest(make_events("warmup", 0, 2000, users))  # connections, caches, the plan read once
        totals = {"baseline": [0, 0.0], "open": [0, 0.0], "unplanned": [0, 0.0]}
        for round_no in range(ROUNDS):
            phases = ["baseline", "open", "unplanned"] if round_no % 2 == 0 else ["unplanned", "open", "baseline"]
            for phase in phases:
                events = make_events(phase, round_no, EVENTS, users)
                seconds = ingest(events)
                totals[phase][0] += len(events)
                totals[phase][1] += seconds
                print(f"round {round_no + 1} {phase:>8}: {len(events):,} events in {seconds:6.2f} s "
                      f"= {len(events) / seconds:8.0f} events/s")
        rates = {phase: count / seconds for phase, (count, seconds) in totals.items()}
        ratio = rates["open"] / rates["baseline"]
        violations = call("GET", "/api/tracking-plan/violations").json()["items"]
        flagged = sum(v["flagged"] for v in violations)
        print(LINE)
        print(f"baseline (built-in, known users) {rates['baseline']:8.0f} events/s")
        print(f"open (half custom, validated)    {rates['open']:8.0f} events/s   ({flagged} flagged and recorded)")
        print(f"unplanned (same, no validation)  {rates['unplanned']:8.0f} events/s")
        print(f"open / baseline                  {ratio:8.2f}x   target >= 0.9x  {verdict(ratio >= 0.9)}")
        print(f"open / unplanned                 {rates['open'] / rates['unplanned']:8.2f}x   (what validating costs; "
              "the rest is the custom events' documents)")
    finally:
        stack.stop()


if __name__ == "__main__":
    run(main)
