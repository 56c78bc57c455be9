"""Smoke test of the docker compose stack (`make up`): a signup goes all the way through.

It brings the whole stack up from docker-compose.yml under a project name of its own
(`pulse-smoke-<random>`, host ports chosen free, so a running `make up` stack is left alone),
POSTs a signup to the api, waits (with a deadline) until the worker and analytics have written the
user's profile document to MongoDB and Mailpit holds the welcome e-mail, then removes the project
with its volumes.

Where no Docker engine answers (`docker info` fails), the test is skipped with the reason.
It uses no pytest-celery fixtures: the compose stack is driven with the docker CLI only, so nothing
here can shadow the `celery.contrib.pytest` fixtures of the main suite.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from tests.fixtures import wait_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
UP_TIMEOUT = 1200  # a first run builds the image and pulls postgres, rabbitmq, mongo, redis, mailpit
FLOW_TIMEOUT = 180


def _docker_unavailable() -> str | None:
    """Why the suite cannot run here, or None when a Docker engine and compose v2 answer."""
    if shutil.which("docker") is None:
        return "no Docker engine: the docker CLI is not installed"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Docker engine: `docker info` failed ({exc})"
    if info.returncode != 0:
        detail = (info.stderr or info.stdout).strip().splitlines()
        return "no Docker engine: `docker info` failed" + (f" ({detail[-1]})" if detail else "")
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    if compose.returncode != 0:
        return "the docker compose v2 plugin is missing (`docker compose version` failed)"
    return None


# Evaluated once, at collection: the test is collected and reported as skipped with the reason (a
# module-level pytest.skip would leave nothing collected, and pytest would exit 5 instead of 0).
_REASON = _docker_unavailable()

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(UP_TIMEOUT + FLOW_TIMEOUT + 300),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComposeStack:
    """One compose project built from the repository's docker-compose.yml."""

    def __init__(self) -> None:
        self.project = f"pulse-smoke-{uuid.uuid4().hex[:8]}"
        # The product settings of the native test run (tests/conftest.py) must not leak into the
        # compose interpolation; only the host ports are chosen here, everything else is default.
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"QUEUE_PREFIX", "LOG_LEVEL", "LOG_JSON", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"}
        }
        # The secrets compose requires (no defaults: .env.example), fresh for this project.
        self.secrets = {name: secrets.token_urlsafe(18) for name in
                        ("POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS", "MONGO_ROOT_PASSWORD", "REDIS_PASSWORD",
                         "GRAFANA_ADMIN_PASSWORD")}
        self.secrets["FLOWER_BASIC_AUTH"] = f"pulse:{secrets.token_urlsafe(18)}"
        self.env.update(self.secrets)
        self.env.update(
            API_PORT=str(_free_port()),
            FLOWER_PORT=str(_free_port()),
            RABBITMQ_UI_PORT=str(_free_port()),
            MAILPIT_UI_PORT=str(_free_port()),
            PROMETHEUS_PORT=str(_free_port()),
            GRAFANA_PORT=str(_free_port()),
            JAEGER_UI_PORT=str(_free_port()),
        )

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        command = [
            "docker", "compose", "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "-p", self.project, *args,
        ]
        result = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"`{' '.join(command)}` exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                f"\n--- logs ---\n{self.logs()}"
            )
        return result

    def logs(self, tail: int = 80) -> str:
        try:
            result = self.compose("logs", "--no-color", "--tail", str(tail), timeout=60, check=False)
        except subprocess.TimeoutExpired:
            return "(docker compose logs timed out)"
        return result.stdout[-20000:] + result.stderr[-2000:]

    def url(self, service: str, port: int) -> str:
        """http://host:port where `service`'s container port is published."""
        published = self.compose("port", service, str(port)).stdout.strip().splitlines()[0]
        host, _, host_port = published.rpartition(":")
        host = "127.0.0.1" if host in ("0.0.0.0", "", "[::]", "::") else host
        return f"http://{host}:{host_port}"

    def mongo_find_one(self, collection: str, query: dict) -> dict | None:
        """findOne in the compose MongoDB (database `pulse`), through mongosh in its container."""
        script = (
            f"const doc = db.getCollection({json.dumps(collection)}).findOne({json.dumps(query)});"
            "print(doc === null ? 'null' : EJSON.stringify(doc));"
        )
        result = self.compose("exec", "-T", "mongo", "mongosh", "--quiet", "-u", "pulse", "-p",
                              self.secrets["MONGO_ROOT_PASSWORD"], "--authenticationDatabase", "admin", "pulse",
                              "--eval", script, timeout=60)
        lines = result.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def up(self) -> None:
        # As `make up`: the one-shot jobs are awaited by the services that depend on them
        # (service_completed_successfully), so --wait does not fail on their exited containers.
        self.compose("up", "--build", "--detach", "--wait", timeout=UP_TIMEOUT)
        # Nothing exited but the jobs, and each of them with 0.
        listing = self.compose("ps", "--all", "--format", "json").stdout.strip()
        # One JSON object per line (Compose >= 2.21), or one array (earlier 2.x).
        states = json.loads(listing) if listing.startswith("[") else [
            json.loads(line) for line in listing.splitlines() if line.strip()]
        for state in states:
            if state["Service"] in ("migrate", "dev-key"):
                assert state["State"] == "exited" and state["ExitCode"] == 0, state
            else:
                assert state["State"] == "running", state

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=300, check=False)


@pytest.fixture(scope="module")
def stack():
    compose_stack = ComposeStack()
    try:
        compose_stack.up()
        yield compose_stack
    finally:
        compose_stack.down()


def _poll(stack: ComposeStack, predicate, what: str):
    try:
        return wait_for(predicate, timeout=FLOW_TIMEOUT, interval=1.0, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- docker compose logs ---\n{stack.logs()}") from None


def test_signup_reaches_mongodb_and_mailpit(stack):
    api = stack.url("api", 8000)
    ready = requests.get(f"{api}/health/ready", timeout=30)
    assert ready.status_code == 200, ready.text

    suffix = uuid.uuid4().hex[:8]
    body = {
        "username": f"smoke_{suffix}",
        "email": f"smoke.{suffix}@example.com",
        "full_name": "Olena Smoke",
        "address": {"street": "Khreschatyk Street", "city": "Kyiv", "country_code": "UA"},
    }
    response = requests.post(f"{api}/api/users/signup", json=body, timeout=30)
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]

    # The worker writes the profile document; analytics then fills in the segment.
    profile = _poll(
        stack,
        lambda: stack.mongo_find_one("profiles", {"user_id": user_id, "segment": {"$ne": None}}),
        what=f"the profile of user {user_id} in MongoDB",
    )
    assert profile["username"] == body["username"]

    mailpit = stack.url("mailpit", 8025)

    def welcome_mails():
        messages = requests.get(f"{mailpit}/api/v1/messages", timeout=10).json()["messages"] or []
        return [m for m in messages if any(to.get("Address") == body["email"] for to in m.get("To") or [])]

    mails = _poll(stack, welcome_mails, what=f"the welcome e-mail to {body['email']} in Mailpit")
    assert "Welcome to Pulse" in mails[0]["Subject"]

    # The development key the dev-key job wrote: a profile needs it.
    key = stack.compose("run", "--rm", "--no-deps", "dev-key", "cat",
                        "/keys/dev-api-key").stdout.strip().splitlines()[-1]
    assert requests.get(f"{api}/api/users/{user_id}/profile", timeout=30).status_code == 401
    profile = requests.get(f"{api}/api/users/{user_id}/profile", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert profile.status_code == 200, profile.text

    # Prometheus scrapes every target, and reads the signup the API counted.
    prometheus = stack.url("prometheus", 9090)

    def targets_up():
        active = requests.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {t["labels"]["job"] for t in active if t["health"] == "up"} == {"pulse-api", "celery-flower", "rabbitmq"}

    _poll(stack, targets_up, what="Prometheus scraping the API, Flower and RabbitMQ")
    query = 'sum(pulse_http_requests_total{route="/api/users/signup",status="201"})'
    _poll(stack, lambda: requests.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10)
          .json()["data"]["result"], what="the signup counted in Prometheus")
