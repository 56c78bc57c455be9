"""End to end, as a person runs it: `make dev` starts every process from the Procfile, a signup
over HTTP becomes a profile document, a `user_created` event and a welcome e-mail."""
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests
from pymongo import MongoClient

from scripts.lifetime import die_with_parent
from tests.conftest import RUN_ID, TEST_ENV, free_port
from tests.fixtures import ROOT, wait_for
from tests.helpers import pipeline_busy, signup_body, tasks_held


@pytest.fixture(scope="module")
def dev_stack(services):
    from shared.infra.db import drop_database

    var_dir = Path(tempfile.mkdtemp(prefix="pulse-e2e-"))
    ports = {name: free_port() for name in ("API_PORT", "SMTP_PORT", "FLOWER_PORT", "MONGO")}
    env = {
        **os.environ,
        **TEST_ENV,
        "DATABASE_URL": TEST_ENV["DATABASE_URL"] + "_e2e",
        "MONGO_URI": f"mongodb://127.0.0.1:{ports['MONGO']}/pulse_e2e",
        "QUEUE_PREFIX": f"pulse_e2e_{RUN_ID}",
        "CACHE_PREFIX": f"pulse-e2e-{RUN_ID}:",
        "API_PORT": str(ports["API_PORT"]),
        "SMTP_PORT": str(ports["SMTP_PORT"]),
        "FLOWER_PORT": str(ports["FLOWER_PORT"]),
        "PULSE_VAR_DIR": str(var_dir),
        "LOG_LEVEL": "INFO",
        # Traces on for this stack only: every process appends its spans to a file of its own.
        "TRACES_DIR": str(var_dir / "traces"),
    }
    env.pop("PULSE_API_KEY", None)  # the session's key lives in another database: make dev writes its own
    log_path = var_dir / "make-dev.log"
    with open(log_path, "wb") as log:
        # die_with_parent: if pytest dies without its finalizers, make gets SIGTERM, which GNU make
        # passes on to the recipe it runs (honcho), which stops every process of the stack.
        process = subprocess.Popen(["make", "dev"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=die_with_parent())
    base = f"http://127.0.0.1:{ports['API_PORT']}"
    try:
        wait_for(lambda: requests.get(f"{base}/health/ready", timeout=2).json()["status"] == "ok", timeout=180,
                 interval=0.5,
                 what=f"make dev to be ready (log: {log_path})")
        yield {"url": base, "mongo_uri": env["MONGO_URI"], "maildir": var_dir / "mail", "log": log_path,
               "key_file": var_dir / "dev-api-key", "flower_port": ports["FLOWER_PORT"],
               "traces": var_dir / "traces"}
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        drop_database(env["DATABASE_URL"])
        shutil.rmtree(var_dir, ignore_errors=True)  # MongoDB data, mail, beat schedule, the log


def welcome_mails(maildir: Path, address: str) -> list[str]:
    return [p.read_text(errors="replace") for p in (maildir / "new").glob("*")
            if address in p.read_text(errors="replace")]


def dev_key(dev_stack) -> dict:
    return {"Authorization": f"Bearer {dev_stack['key_file'].read_text().strip()}"}


def test_signup_over_http_reaches_mongodb_and_the_mail_catcher(dev_stack):
    body = signup_body(full_name="Ivan Ivanov")
    response = requests.post(f"{dev_stack['url']}/api/users/signup", json=body, headers=dev_key(dev_stack), timeout=10)
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]

    db = MongoClient(dev_stack["mongo_uri"], tz_aware=True).get_default_database()
    profile = wait_for(lambda: db.profiles.find_one({"user_id": user_id, "segment": {"$ne": None}}), timeout=60,
                       what="profile document")
    assert profile["username"] == body["username"]
    assert db.events.count_documents({"user_id": user_id, "event_type": "user_created"}) == 1
    mails = wait_for(lambda: welcome_mails(dev_stack["maildir"], body["email"]), timeout=60,
                     what="welcome e-mail in the catcher")
    assert "Subject: Welcome to Pulse, Ivan Ivanov!" in mails[0]

    again = requests.post(f"{dev_stack['url']}/api/users/signup", json=body, headers=dev_key(dev_stack), timeout=10)
    assert again.status_code == 409
    bad = requests.post(f"{dev_stack['url']}/api/users/signup", json={**body, "email": "not-an-email"},
                        headers=dev_key(dev_stack), timeout=10)
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["email"]

    profile = requests.get(f"{dev_stack['url']}/api/users/{user_id}/profile", headers=dev_key(dev_stack), timeout=10)
    assert profile.status_code == 200 and profile.json()["user"]["username"] == body["username"]


def test_keys_and_limits_as_a_new_user_meets_them(dev_stack):
    """The issue's walk-through: make dev says where the development key is; a profile needs a
    key that may read; an ingest-only key posts events; fast anonymous signups hit 429."""
    key_file = dev_stack["key_file"]
    assert "development key (id " in dev_stack["log"].read_text() and str(key_file) in dev_stack["log"].read_text()
    assert key_file.stat().st_mode & 0o777 == 0o600
    url, admin = dev_stack["url"], dev_key(dev_stack)
    user_id = requests.post(f"{url}/api/users/signup", json=signup_body(), headers=admin, timeout=10).json()["id"]

    anonymous = requests.get(f"{url}/api/users/{user_id}/profile", timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["Content-Type"] == "application/problem+json"
    created = requests.post(f"{url}/api/keys", json={"scopes": ["ingest"], "name": "collector"}, headers=admin,
                            timeout=10)
    assert created.status_code == 201, created.text
    ingest = {"Authorization": f"Bearer {created.json()['key']}"}
    assert requests.get(f"{url}/api/users/{user_id}/profile", headers=ingest, timeout=10).status_code == 403
    event = {"user_id": user_id, "event_type": "login"}
    assert requests.post(f"{url}/api/events", json=event, headers=ingest, timeout=10).status_code == 202

    statuses = [requests.post(f"{url}/api/users/signup", json=signup_body(), timeout=10) for _ in range(30)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert int(limited[0].headers["Retry-After"]) >= 1 and limited[0].headers["RateLimit-Remaining"] == "0"


def families(url: str, **kwargs) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    response = requests.get(url, timeout=30, **kwargs)
    assert response.status_code == 200, response.text[:300]
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def test_every_metrics_endpoint_of_the_stack_answers_with_its_families(dev_stack):
    """The API's /metrics (added up over its two granian processes), Flower's (the Celery
    workers') and RabbitMQ's Prometheus plugin, as `make dev` runs them."""
    url, admin = dev_stack["url"], dev_key(dev_stack)
    before = families(f"{url}/metrics")
    signups = [requests.post(f"{url}/api/users/signup", json=signup_body(), headers=admin,
                             timeout=10) for _ in range(6)]
    assert all(r.status_code == 201 for r in signups)
    after = families(f"{url}/metrics")

    def signups_counted(metrics):
        return sum(s.value for s in metrics["pulse_http_requests"].samples
                   if s.name == "pulse_http_requests_total" and s.labels["route"] == "/api/users/signup"
                   and s.labels["status"] == "201")

    # Six requests over fresh connections reach both API processes; the scrape adds them all up.
    assert signups_counted(after) - signups_counted(before) == 6
    for family in ("pulse_outbox_pending", "pulse_events_stored", "pulse_dead_letters", "pulse_metrics_source_up"):
        assert family in after, family

    flower = f"http://127.0.0.1:{dev_stack['flower_port']}/metrics"
    wait_for(lambda: any(s.labels.get("task") == "pulse.worker.user_created"
                         and s.labels.get("type") == "task-succeeded"
                         for s in families(flower)["flower_events"].samples),
             timeout=60, what="Flower counting the user_created tasks")
    assert "flower_task_runtime_seconds" in families(flower)
    rabbit = families("http://127.0.0.1:15692/metrics")
    assert "rabbitmq_queue_messages_ready" in rabbit and "rabbitmq_connections" in rabbit


def settle(dev_stack) -> None:
    """Wait until the stack has nothing in flight: no outbox row, no message in a work queue, no
    user queued for rescoring and no drain scheduled (read from the stack's own GET /api/pipeline).
    An earlier test's signup still queued would otherwise schedule the next drain, and a signup
    made now would be rescored in that drain, under that change's id and trace."""
    import socket

    import redis

    from shared.infra.celery_app import create_celery_app

    scheduled = f"pulse-e2e-{RUN_ID}:rescore:scheduled"
    r = redis.Redis.from_url(TEST_ENV["REDIS_URL"])
    # The queues count ready messages only: a task a worker is running (or holds for later) is
    # asked of the stack's own workers (they share the test run's vhost with its session workers).
    control = create_celery_app("pulse-e2e-control").control
    nodes = [f"{role}-pulse_e2e_{RUN_ID}@{socket.gethostname()}" for role in ("worker", "mailer", "analytics")]

    def quiet() -> bool:
        now = requests.get(f"{dev_stack['url']}/api/pipeline", headers=dev_key(dev_stack), timeout=10).json()
        return not pipeline_busy(now) and not tasks_held(control, nodes) and not r.exists(scheduled)

    wait_for(quiet, timeout=90, what="nothing in flight on the stack")


def test_one_request_id_in_every_process_log_line_and_the_email(dev_stack):
    import uuid

    # A rescoring drain carries the id of the change that scheduled it: let none be scheduled yet.
    settle(dev_stack)
    request_id = f"e2e-{uuid.uuid4().hex[:12]}"
    body = signup_body()
    response = requests.post(f"{dev_stack['url']}/api/users/signup", json=body, timeout=10,
                             headers={**dev_key(dev_stack), "X-Request-ID": request_id})
    assert response.status_code == 201 and response.headers["X-Request-ID"] == request_id

    def processes_logging_it() -> set[str]:
        lines = dev_stack["log"].read_text(errors="replace").splitlines()
        return {line.split("|", 1)[0].split()[-1].split(".")[0] for line in lines if request_id in line and "|" in line}

    wanted = {"relay", "worker", "mailer", "analytics"}
    try:
        wait_for(lambda: wanted <= processes_logging_it(), timeout=60, what="the request id in every process's lines")
    except AssertionError as exc:
        lines = [line for line in dev_stack["log"].read_text(errors="replace").splitlines() if request_id in line]
        raise AssertionError(f"{exc}: found in {sorted(processes_logging_it())}:\n" + "\n".join(lines[-20:])) from None
    mails = wait_for(lambda: welcome_mails(dev_stack["maildir"], body["email"]), timeout=60, what="the welcome e-mail")
    assert f"X-Request-ID: {request_id}" in mails[0]


def read_spans(directory: Path) -> list[dict]:
    import json

    spans = []
    for path in directory.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                spans.append(json.loads(line))
            except ValueError:  # a line being written right now
                pass
    return spans


def test_one_trace_from_the_signup_to_analytics(dev_stack):
    """The issue's trace: one signup, spans from the API, the relay, the worker, the mailer and
    analytics in one trace, each hop the parent of the next, with the stores' spans in it."""
    # The analytics step of a signup is the rescoring drain its worker task schedules; a drain
    # already scheduled by an earlier change would take the user into that change's trace.
    settle(dev_stack)
    request_id = f"trace-{RUN_ID}-{os.getpid()}"
    response = requests.post(f"{dev_stack['url']}/api/users/signup", json=signup_body(), timeout=10,
                             headers={**dev_key(dev_stack), "X-Request-ID": request_id})
    assert response.status_code == 201, response.text

    def server_span() -> dict | None:
        return next((s for s in read_spans(dev_stack["traces"])
                     if s["kind"] == "SERVER" and s["attributes"].get("pulse.request_id") == request_id), None)

    root = wait_for(server_span, timeout=30, what="the API's span of the signup request")
    wanted = {"pulse-api", "pulse-relay", "pulse-worker", "pulse-mailer", "pulse-analytics"}

    def trace_spans() -> list[dict] | None:
        spans = [s for s in read_spans(dev_stack["traces"]) if s["trace_id"] == root["trace_id"]]
        done = any(s["name"] == "run/pulse.analytics.compute_profiles" for s in spans)
        return spans if done and wanted <= {s["service"] for s in spans} else None

    try:
        spans = wait_for(trace_spans, timeout=60, what="spans of every process in the signup's trace")
    except AssertionError as exc:
        found = [(s["service"],
                  s["name"]) for s in read_spans(dev_stack["traces"]) if s["trace_id"] == root["trace_id"]]
        raise AssertionError(f"{exc}: the trace holds {sorted(set(found))}") from None

    by_id = {s["span_id"]: s for s in spans}
    assert root["parent_span_id"] is None and root["name"] == "POST /api/users/signup"

    def chain(span: dict) -> list[tuple[str, str]]:
        """(service, name) from the root down to `span`; fails on a parent missing from the trace."""
        path = [span]
        while path[-1]["parent_span_id"] is not None:
            parent = by_id.get(path[-1]["parent_span_id"])
            assert parent is not None, f"the parent of {path[-1]['name']} ({path[-1]['service']}) is not in the trace"
            path.append(parent)
        return [(s["service"], s["name"]) for s in reversed(path)]

    [analytics] = [s for s in spans if s["name"] == "run/pulse.analytics.compute_profiles"]
    assert chain(analytics) == [
        ("pulse-api", "POST /api/users/signup"),
        ("pulse-api", "outbox write pulse.worker.user_created"),
        ("pulse-relay", "outbox publish pulse.worker.user_created"),
        ("pulse-relay", "apply_async/pulse.worker.user_created"),
        ("pulse-worker", "run/pulse.worker.user_created"),
        ("pulse-worker", "apply_async/pulse.analytics.compute_profiles"),
        ("pulse-analytics", "run/pulse.analytics.compute_profiles"),
    ]
    [created] = [s for s in spans if s["name"] == "run/pulse.worker.user_created"]
    assert created["attributes"]["pulse.rescore.joined_scheduled_drain"] is False  # it scheduled the drain
    [welcome] = [s for s in spans if s["name"] == "run/pulse.worker.send_welcome"]
    assert chain(welcome)[-3:] == [("pulse-worker", "run/pulse.worker.user_created"),
                                   ("pulse-worker", "apply_async/pulse.worker.send_welcome"),
                                   ("pulse-mailer", "run/pulse.worker.send_welcome")]

    def stores(service: str) -> set[str]:
        return {s["attributes"].get("db.system") or s["attributes"].get("db.system.name")
                for s in spans if s["service"] == service and s["kind"] == "CLIENT"}

    # The signup's INSERTs, the event and profile in MongoDB, the cache and rescoring set in Redis.
    assert "postgresql" in stores("pulse-api")
    assert {"postgresql", "mongodb", "redis"} <= stores("pulse-worker")
    assert {"postgresql", "mongodb", "redis"} <= stores("pulse-analytics")
    for span in spans:  # every span of the trace hangs from the request
        chain(span)


def test_the_dashboard_is_served_with_its_own_chart_library(dev_stack):
    base = dev_stack["url"]
    assert requests.get(f"{base}/dashboard", allow_redirects=False, timeout=10).status_code == 303  # to the login
    login = requests.post(f"{base}/dashboard/login", data={"key": dev_stack["key_file"].read_text().strip()},
                          allow_redirects=False, timeout=10)
    assert login.status_code == 303 and "pulse_session" in login.cookies
    page = requests.get(f"{base}/dashboard", cookies=login.cookies, timeout=10)
    assert page.status_code == 200 and "/dashboard/static/vendor/chart.umd.min.js" in page.text
    script = requests.get(f"{base}/dashboard/static/vendor/chart.umd.min.js", timeout=10)
    assert script.status_code == 200 and "Chart.js v4.6.1" in script.text[:200]
    pipeline = requests.get(f"{base}/api/pipeline", cookies=login.cookies, timeout=10).json()
    assert pipeline["sources"] == {"postgres": True, "redis": True, "rabbitmq": True, "mongodb": True}
    before = pipeline["signups_total"]
    assert requests.post(f"{base}/api/users/signup", json=signup_body(), headers=dev_key(dev_stack),
                         timeout=10).status_code == 201
    # Counted by whichever API process answered: the figures are added up over both.
    assert requests.get(f"{base}/api/pipeline", cookies=login.cookies, timeout=10).json()["signups_total"] == before + 1
