"""`make chaos`: mixed load on a stack of our own while faults hit it, then a reconciliation.

    pulse chaos [--duration 180] [--seed N] [--keep]

Starts its own Postgres, RabbitMQ, Redis, SecantusDB and SMTP catcher (scripts.private_servers)
and its own API, outbox relay, worker, mailer, analytics worker and beat, so every fault lands on
something it started and nothing else on the machine is touched. While clients sign users up,
post event batches (a share of them sent twice, and re-sent after a 503 or no answer, with the
same event ids), read profiles and ask for a refit, the schedule injects, at seeded random
moments: SIGKILL of the worker, the mailer, the analytics worker, the relay and the API (each
restarted, as a supervisor would); a restart of RabbitMQ, of the MongoDB server and of Redis; a
pause (SIGSTOP) of Postgres.

Then it waits until the pipeline is quiet and reconciles: signups answered 201 vs users vs
profile documents vs welcome e-mails; events answered 202 vs stored, once each; counters and
summaries vs a recount from `events`; answers by status during each fault; dead letters. Exit
status 0 when nothing was lost or duplicated (beyond the documented welcome-e-mail window), no
5xx other than a 503 with Retry-After was answered, and nothing was dead-lettered.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.lifetime import die_with_parent, exit_on_signals  # noqa: E402
from scripts.private_servers import (  # noqa: E402
    PrivateMailCatcher,
    PrivateMongo,
    PrivatePostgres,
    PrivateRabbit,
    PrivateRedis,
    accepts,
    free_port,
    process_tree,
    wait_for,
)

VENV_BIN = Path(sys.executable).parent
CATEGORIES = ["Electronics", "Books", "Clothing", "Home", "Sports", "Toys", "Beauty", "Garden"]
CITIES = [("Kyiv", "UA"), ("Lviv", "UA"), ("Warsaw", "PL"), ("Berlin", "DE"), ("Paris", "FR")]


# ----------------------------------------------------------------------------- the stack


class ChaosStack:
    """Private servers and Pulse's processes, each killable and restartable."""

    def __init__(self, quiet_sweep_seconds: float = 5.0) -> None:
        self.postgres = PrivatePostgres()
        self.rabbit = PrivateRabbit()
        self.redis = PrivateRedis()
        self.mongo = PrivateMongo()
        self.mail = PrivateMailCatcher()
        self.servers = {"postgres": self.postgres, "rabbitmq": self.rabbit, "redis": self.redis,
                        "mongodb": self.mongo, "mail": self.mail}
        self.root = self.postgres.root.parent / f"pulse-chaos-{uuid.uuid4().hex[:8]}"
        self.root.mkdir()
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": f"{self.postgres.url}/pulse",
            "BROKER_URL": self.rabbit.url,
            "MONGO_URI": self.mongo.mongo_uri("pulse"),
            "REDIS_URL": self.redis.url,
            "RESULT_BACKEND": self.redis.url.replace("/0", "/1"),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.mail.port),
            "QUEUE_PREFIX": "pulse",
            "QUEUE_TYPE": "classic",  # one node; and quiet() counts the queues classic uses
            "CACHE_PREFIX": "pulse:",
            "OUTBOX_POLL_INTERVAL": "0.2",
            "RESCORE_DELAY_SECONDS": "1",
            "RESCORE_SWEEP_SECONDS": str(quiet_sweep_seconds),
            "LOG_LEVEL": "WARNING",
            "PULSE_VAR_DIR": str(self.root),
            # Short, so that the degraded-mode test's read during a Postgres outage is past it.
            "API_KEY_CACHE_SECONDS": "0.5",
        }
        py = str(VENV_BIN / "python")
        celery = [py, "-m", "celery"]

        def worker(app: str, queues: str, name: str) -> list[str]:
            return [*celery, "-A", app, "worker", "-Q", queues, "-n", f"{name}@%h", "--concurrency", "1",
                    "--without-mingle", "--without-gossip", "--loglevel", "WARNING"]

        self.commands = {
            "api": [str(VENV_BIN / "granian"), "--interface", "wsgi", "--no-ws", "--host", "127.0.0.1", "--port",
                    str(self.api_port), "--workers", "2", "--blocking-threads", "4", "--respawn-failed-workers",
                    "services.api.wsgi:app"],
            "relay": [py, "-m", "services.api.outbox_relay"],
            "worker": worker("services.worker.main", "pulse.users,pulse.events", "chaos-worker"),
            "mailer": worker("services.worker.main", "pulse.email", "chaos-mailer"),
            "analytics": worker("services.analytics.main", "pulse.analytics", "chaos-analytics"),
            "beat": [*celery, "-A", "services.analytics.main", "beat", "--schedule", str(self.root / "beat-schedule"),
                     "--loglevel", "WARNING"],
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.headers: dict[str, str] = {}

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        for server in self.servers.values():
            server.start()
        subprocess.run([str(VENV_BIN / "pulse"), "migrate"], env=self.env, cwd=ROOT, check=True,
                       capture_output=True)
        # Its own development key, as `make dev` makes one: every caller of this stack sends it.
        key_file = self.root / "dev-api-key"
        subprocess.run([str(VENV_BIN / "pulse"), "keys", "dev", str(key_file)], env=self.env,
                       cwd=ROOT, check=True, capture_output=True)
        self.headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
        for name in self.commands:
            self.start_process(name)
        wait_for(lambda: requests.get(f"{self.api}/health/ready", timeout=5).json()["status"] == "ok", 120,
                 what="the chaos stack's API")
        wait_for(lambda: self.workers() >= 3, 120, what="the chaos stack's three Celery workers")

    def workers(self) -> int:
        from celery import Celery

        app = Celery(broker=self.rabbit.url)
        try:
            return len(app.control.ping(timeout=1.0))
        finally:
            app.close()

    def start_process(self, name: str) -> None:
        log = open(self.root / f"{name}.log", "ab")
        # A group of its own (killed as one), and SIGTERM from the kernel if this run dies first.
        self.processes[name] = subprocess.Popen(self.commands[name], cwd=ROOT, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True,
                                                preexec_fn=die_with_parent())
        if name == "api":
            wait_for(lambda: accepts(self.api_port), 60, what="the API to listen")

    def kill_process(self, name: str) -> None:
        process = self.processes[name]
        for pid in process_tree(process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for server in self.servers.values():
            server.stop()

    def remove(self) -> None:
        self.stop()
        import shutil

        for server in self.servers.values():
            shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------- faults


@dataclass
class Fault:
    name: str
    started: float = 0.0
    ended: float = 0.0


def inject(stack: ChaosStack, name: str, rng: random.Random) -> None:
    """One fault, from its start until the faulty part is back."""
    if name.startswith("kill "):
        process = name.split()[1]
        stack.kill_process(process)
        time.sleep(rng.uniform(0.5, 2.0))  # a supervisor's restart delay
        stack.start_process(process)
    elif name.startswith("restart "):
        server = stack.servers[name.split()[1]]
        server.stop()
        time.sleep(rng.uniform(2.0, 5.0))
        server.start()
    elif name == "pause postgres":
        stack.postgres.pause()
        time.sleep(rng.uniform(3.0, 6.0))
        stack.postgres.resume()
    else:
        raise ValueError(name)


FAULTS = ["kill worker", "kill mailer", "kill analytics", "kill relay", "kill api", "restart rabbitmq",
          "restart mongodb", "restart redis", "pause postgres"]


# ----------------------------------------------------------------------------- load


@dataclass
class Ledger:
    """What the clients were told."""

    signups: dict[int, str] = field(default_factory=dict)  # id -> email, answered 201
    signups_unanswered: list[str] = field(default_factory=list)  # usernames without an answer
    events: set[str] = field(default_factory=set)  # event ids answered 202
    events_unanswered: set[str] = field(default_factory=set)
    batches_sent_twice: int = 0
    answers: list[tuple[float, str, str]] = field(default_factory=list)  # (time, operation, status)
    bad_5xx: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, operation: str, response: requests.Response | None, error: Exception | None = None) -> str:
        if response is None:
            status = "no answer"
        else:
            status = str(response.status_code)
            retry_later = response.status_code == 503 and response.headers.get("Retry-After")
            if response.status_code >= 500 and not retry_later:
                with self.lock:
                    self.bad_5xx.append(f"{operation} {response.status_code} {response.text[:200]}")
        with self.lock:
            self.answers.append((time.monotonic(), operation, status))
        return status


class Load:
    def __init__(self, api: str, ledger: Ledger, rng: random.Random, headers: dict[str, str]) -> None:
        self.api = api
        self.headers = headers
        self.ledger = ledger
        self.rng = rng
        self.stop = threading.Event()
        self.run_id = uuid.uuid4().hex[:6]
        self.counter = 0

    def _post(self, session: requests.Session, operation: str, path: str, body: dict):
        try:
            response = session.post(f"{self.api}{path}", json=body, timeout=15)
        except requests.RequestException as exc:
            return self.ledger.answer(operation, None, exc), None
        return self.ledger.answer(operation, response), response

    def signups(self) -> None:
        session = requests.Session()
        session.headers.update(self.headers)
        while not self.stop.is_set():
            self.counter += 1
            username = f"chaos_{self.run_id}_{self.counter}"
            city, country = self.rng.choice(CITIES)
            body = {"username": username, "email": f"{username}@example.com", "full_name": f"Chaos User {self.counter}",
                    "address": {"street": f"{self.counter} Fault Street", "city": city, "country_code": country}}
            status, response = self._post(session, "signup", "/api/users/signup", body)
            if status == "201":
                with self.ledger.lock:
                    self.ledger.signups[response.json()["id"]] = body["email"]
            elif status == "no answer":
                self.ledger.signups_unanswered.append(username)
                time.sleep(0.5)  # the API is down: a client backs off
            time.sleep(0.05)

    def _batch(self, users: list[int]) -> list[dict]:
        now = datetime.now(UTC)
        events = []
        for _ in range(self.rng.randint(1, 20)):
            user_id = self.rng.choice(users)
            moment = (now - timedelta(days=self.rng.randint(0, 200), seconds=self.rng.randint(0, 86400))).isoformat()
            if self.rng.random() < 0.6:
                events.append({"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "user_purchase",
                               "timestamp": moment,
                               "metadata": {"product_id": f"P-{self.rng.randint(1, 300)}",
                                            "price": round(self.rng.uniform(1, 400), 2),
                                            "category": self.rng.choice(CATEGORIES)}})
            else:
                events.append({"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "page_view",
                               "timestamp": moment, "metadata": {"page": f"/p/{self.rng.randint(1, 50)}"}})
        return events

    def _accepted(self, batch: list[dict]) -> None:
        ids = {e["event_id"] for e in batch}
        with self.ledger.lock:
            self.ledger.events |= ids
            self.ledger.events_unanswered -= ids

    def events(self) -> None:
        session = requests.Session()
        session.headers.update(self.headers)
        retry: list[list[dict]] = []
        while not self.stop.is_set():
            with self.ledger.lock:
                users = list(self.ledger.signups)
            if not users:
                time.sleep(0.2)
                continue
            batch = retry.pop(0) if retry else self._batch(users)
            status, _ = self._post(session, "events", "/api/events/batch", {"events": batch})
            if status == "202":
                self._accepted(batch)
                if self.rng.random() < 0.2:  # the client sends it again: must change nothing
                    self.ledger.batches_sent_twice += 1
                    retry.append(batch)
            elif status in ("503", "no answer"):
                # Either may have been stored anyway (a confirm lost with the connection): ambiguous
                # until a later send of the same ids is answered 202.
                with self.ledger.lock:
                    self.ledger.events_unanswered |= {e["event_id"] for e in batch} - self.ledger.events
                retry.append(batch)  # same ids: a retry can never duplicate
                time.sleep(0.5)
            time.sleep(0.05)
        # Whatever still waits for a retry is sent until answered, so every id is decided.
        deadline = time.monotonic() + 60
        while retry and time.monotonic() < deadline:
            batch = retry[0]
            status, _ = self._post(session, "events", "/api/events/batch", {"events": batch})
            if status == "202":
                retry.pop(0)
                self._accepted(batch)
            else:
                time.sleep(1)

    def profiles(self) -> None:
        session = requests.Session()
        session.headers.update(self.headers)
        while not self.stop.is_set():
            with self.ledger.lock:
                users = list(self.ledger.signups)
            if users:
                try:
                    response = session.get(f"{self.api}/api/users/{self.rng.choice(users)}/profile", timeout=15)
                    self.ledger.answer("profile", response)
                except requests.RequestException as exc:
                    self.ledger.answer("profile", None, exc)
                    time.sleep(0.5)
            time.sleep(0.05)

    def refit(self) -> None:
        try:
            # A fit is a job: the API answers 202 at once; the refit runs on the analytics worker.
            response = requests.post(f"{self.api}/api/analytics/models/fit", json={}, headers=self.headers, timeout=30)
            self.ledger.answer("fit", response)
        except requests.RequestException as exc:
            self.ledger.answer("fit", None, exc)


# ----------------------------------------------------------------------------- reconciliation


def queue_depths(stack: ChaosStack) -> dict[str, int]:
    """Messages per queue, ready and unacknowledged: a retry waiting for its countdown is held,
    unacknowledged, by a worker, and is still work to do."""
    listing = stack.rabbit.ctl("-q", "list_queues", "--no-table-headers", "name", "messages")
    depths = {}
    for line in listing.splitlines():
        name, _, count = line.strip().rpartition("\t")
        if name:
            depths[name] = int(count)
    return depths


def quiet(stack: ChaosStack, engine) -> bool:
    from sqlalchemy import text

    depths = queue_depths(stack)
    work = {name: n for name, n in depths.items() if name.startswith("pulse.") and name != "pulse.dead_letter"}
    if "pulse.events" not in work or any(work.values()):
        return False
    with engine.connect() as conn:
        outbox = conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one()
        pending = conn.execute(text("SELECT count(*) FROM rescore_pending")).scalar_one()
    return outbox == 0 and pending == 0


def wait_quiet(stack: ChaosStack, engine, timeout: float) -> float:
    started = time.monotonic()
    calm = 0
    while time.monotonic() - started < timeout:
        try:
            calm = calm + 1 if quiet(stack, engine) else 0
        except Exception:  # noqa: BLE001 - a store still coming back
            calm = 0
        if calm >= 3:  # three looks in a row: no task about to schedule another
            return time.monotonic() - started
        time.sleep(1)
    raise TimeoutError(f"the pipeline was not quiet after {timeout:.0f}s")


def reconcile(stack: ChaosStack, ledger: Ledger, faults: list[Fault], injected_mailer_windows: int) -> dict:
    from pymongo import MongoClient
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.env["DATABASE_URL"])
    waited = wait_quiet(stack, engine, timeout=300)
    accepted = dict(ledger.signups)
    with engine.connect() as conn:
        users = {row.id: row.email for row in conn.execute(text("SELECT id, email FROM users"))}
        unanswered_stored = conn.execute(text("SELECT count(*) FROM users WHERE username = ANY(:names)"),
                                         {"names": ledger.signups_unanswered}).scalar_one()
    mongo = MongoClient(stack.env["MONGO_URI"], serverSelectionTimeoutMS=10_000)
    db = mongo.get_default_database()
    profiles = {doc["_id"] for doc in db.profiles.find({}, {"_id": 1})}
    stored_events = Counter()
    for doc in db.events.find({"event_type": {"$ne": "user_created"}}, {"_id": 0, "event_id": 1}):
        stored_events[doc["event_id"]] += 1
    user_created = Counter(doc["user_id"] for doc in db.events.find({"event_type": "user_created"}, {"user_id": 1}))
    mongo.close()

    import mailbox
    from email.utils import parseaddr

    mails = [(parseaddr(str(m["To"]))[1].lower(), m["Message-ID"]) for m in mailbox.Maildir(stack.mail.maildir,
                                                                                            create=False)]
    mails_to = Counter(to for to, _ in mails)
    same_message_twice = sum(n - 1 for n in Counter(mails).values() if n > 1)
    other_duplicates = sum(n - 1 for n in mails_to.values() if n > 1) - same_message_twice

    check = subprocess.run([str(VENV_BIN / "pulse"), "summaries", "rebuild", "--check"],
                           env=stack.env,
                           cwd=ROOT, capture_output=True, text=True)

    from shared.infra.dead_letters import DeadLetterQueue

    with DeadLetterQueue(broker_url=stack.rabbit.url, prefix="pulse") as dlq:
        dead = dlq.letters()

    by_fault = {}
    for fault in faults:
        window = [a for a in ledger.answers if fault.started <= a[0] <= fault.ended]
        by_fault[fault.name] = dict(Counter(f"{op} {status}" for _, op, status in window))

    event_ids = set(stored_events)
    result = {
        "faults": [f.name for f in faults],
        "quiet_after_s": round(waited, 1),
        "signups_accepted": len(accepted),
        "signups_lost": sorted(set(accepted) - set(users)),
        "signups_unanswered": len(ledger.signups_unanswered),
        "signups_unanswered_stored": unanswered_stored,
        "users": len(users),
        "user_created_events_duplicated": sum(1 for n in user_created.values() if n > 1),
        "profiles_missing": sorted(set(users) - profiles),
        "welcome_missing": sorted(uid for uid, email in users.items() if mails_to[email] == 0),
        "welcome_same_message_twice": same_message_twice,
        "welcome_other_duplicates": other_duplicates,
        "mailer_windows": injected_mailer_windows,
        "events_accepted": len(ledger.events),
        "events_lost": len(ledger.events - event_ids),
        "events_unanswered": len(ledger.events_unanswered),
        "events_stored": sum(stored_events.values()),
        "events_duplicated": sum(n - 1 for n in stored_events.values() if n > 1),
        "events_unknown": len(event_ids - ledger.events - ledger.events_unanswered),
        "batches_sent_twice": ledger.batches_sent_twice,
        "summaries_check": check.returncode,
        "summaries_check_output": (check.stdout + check.stderr).strip()[-1500:],
        "answers": dict(Counter(f"{op} {status}" for _, op, status in ledger.answers)),
        "answers_by_fault": by_fault,
        "bad_5xx": ledger.bad_5xx[:20],
        "dead_letters": [f"{d.task} from {d.queue} ({d.reason}): {d.first_error}" for d in dead],
    }
    result["ok"] = not (
        result["signups_lost"] or result["profiles_missing"] or result["welcome_missing"]
        or result["welcome_other_duplicates"] or result["welcome_same_message_twice"] > injected_mailer_windows
        or result["events_lost"] or result["events_duplicated"] or result["events_unknown"]
        or result["user_created_events_duplicated"] or result["summaries_check"] != 0 or result["bad_5xx"]
        or result["dead_letters"]
    )
    return result


def print_report(result: dict, seed: int, duration: float) -> None:
    line = "=" * 78
    print(line)
    print(f"chaos run: {duration:.0f}s of load, seed {seed}, {len(result['faults'])} faults")
    print(line)
    print("faults injected: " + ", ".join(result["faults"]))
    print(f"pipeline quiet {result['quiet_after_s']}s after the load stopped\n")
    rows = [
        ("signups answered 201", result["signups_accepted"]),
        ("  users in Postgres (of those)", result["signups_accepted"] - len(result["signups_lost"])),
        ("  lost", len(result["signups_lost"])),
        ("  unanswered (connection cut) / stored anyway",
         f"{result['signups_unanswered']} / {result['signups_unanswered_stored']}"),
        ("users in Postgres, all", result["users"]),
        ("  without a profile document", len(result["profiles_missing"])),
        ("  without a welcome e-mail", len(result["welcome_missing"])),
        ("  user_created stored twice", result["user_created_events_duplicated"]),
        ("welcome e-mails sent twice (same Message-ID)", f"{result['welcome_same_message_twice']} "
         f"(allowed: {result['mailer_windows']}, one per mailer kill or MongoDB restart: "
         "SMTP accepted, not yet recorded)"),
        ("welcome e-mails duplicated otherwise", result["welcome_other_duplicates"]),
        ("events answered 202", result["events_accepted"]),
        ("  batches sent twice by the client", result["batches_sent_twice"]),
        ("  stored", result["events_stored"]),
        ("  lost", result["events_lost"]),
        ("  stored more than once", result["events_duplicated"]),
        ("  stored but never answered 202 (unanswered sends)", f"{result['events_unknown']} unexplained; "
         f"{result['events_unanswered']} unanswered ids"),
        ("counters and summaries vs a recount", "equal" if result["summaries_check"] == 0 else "DRIFT"),
        ("5xx other than 503 with Retry-After", len(result["bad_5xx"])),
        ("dead-lettered messages", len(result["dead_letters"])),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print("\nanswers during each fault:")
    for name, counts in result["answers_by_fault"].items():
        print(f"  {name:<18} " + (", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "(no requests)"))
    print("\nall answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(result["answers"].items())))
    if result["summaries_check"] != 0:
        print("\nsummaries check:\n" + result["summaries_check_output"])
    for item in result["bad_5xx"]:
        print("  bad 5xx: " + item)
    for item in result["dead_letters"]:
        print("  dead letter: " + item)
    print(f"\nverdict: {'nothing lost, nothing duplicated' if result['ok'] else 'FAILED'}")


# ----------------------------------------------------------------------------- main


def run(duration: float, seed: int, keep: bool = False, faults: list[str] | None = None) -> dict:
    rng = random.Random(seed)
    schedule = list(faults or FAULTS)
    rng.shuffle(schedule)
    stack = ChaosStack()
    ledger = Ledger()
    injected: list[Fault] = []
    try:
        print(f"starting a private stack (log directory {stack.root}) ...", flush=True)
        stack.start()
        # This process reads the stack too (recount, dead letters): with the stack's settings.
        os.environ.update({k: v for k, v in stack.env.items() if k.isupper()})
        load = Load(stack.api, ledger, random.Random(seed + 1), stack.headers)  # the faults' draws stay the seed's own
        threads = [threading.Thread(target=target, daemon=True)
                   for target in (load.signups, load.events, load.profiles)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        # Faults evenly spread after a warm-up, each at a random moment of its slot.
        slot = duration * 0.8 / len(schedule)
        refit_at = started + duration * 0.5
        refitted = False
        for i, name in enumerate(schedule):
            at = started + duration * 0.1 + i * slot + rng.uniform(0, slot * 0.4)
            while time.monotonic() < at:
                if not refitted and time.monotonic() >= refit_at:
                    threading.Thread(target=load.refit, daemon=True).start()
                    refitted = True
                time.sleep(0.1)
            fault = Fault(name, started=time.monotonic())
            print(f"  {fault.started - started:6.1f}s  {name}", flush=True)
            inject(stack, name, rng)
            fault.ended = time.monotonic() + 2.0  # answers just after recovery still belong to it
            injected.append(fault)
        while time.monotonic() < started + duration:
            time.sleep(0.2)
        load.stop.set()
        for thread in threads:
            thread.join(90)
        mailer_windows = sum(1 for f in injected if f.name in ("kill mailer", "restart mongodb"))
        result = reconcile(stack, ledger, injected, mailer_windows)
        print_report(result, seed, duration)
        return result
    finally:
        if keep:
            print(f"kept: the stack's data and logs in {stack.root} and the servers' directories")
            stack.stop()
        else:
            stack.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse chaos", description=__doc__.split("\n\n")[0].partition(": ")[2])
    parser.add_argument("--duration", type=float, default=float(os.environ.get("CHAOS_DURATION", 180)),
                        help="seconds of load and faults (default 180)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", random.randrange(1_000_000))),
                        help="seed of the schedule and the load (default CHAOS_SEED, else random; printed)")
    parser.add_argument("--faults", help="comma-separated subset of: " + ", ".join(FAULTS))
    parser.add_argument("--keep", action="store_true", help="keep the logs and data for a post-mortem")
    parser.add_argument("--json", metavar="FILE", help="also write the reconciliation to this file")
    args = parser.parse_args(argv)
    # `kill` or a hang-up ends the run through its clean-up (the stack's processes, servers and
    # folders), as Ctrl-C does.
    exit_on_signals()
    faults = [f.strip() for f in args.faults.split(",")] if args.faults else None
    result = run(args.duration, args.seed, args.keep, faults)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
