"""Session fixtures: the real services, started and torn down per test run."""
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

import pytest
import redis as redis_lib
from aiosmtpd.controller import Controller

from scripts.lifetime import die_with_parent, exit_on_signals

# BIN, ROOT and wait_for are the harness's (scripts.private_servers); the tests take them from here.
from scripts.private_servers import BIN, ROOT, PrivateMongo, api_server, wait_for  # noqa: F401
from tests.conftest import MONGO_PORT, SMTP_PORT, TEST_ENV, VHOST

# The operator's command (services/cli), as the venv's console script: what a user runs.
PULSE = str(BIN / "pulse")


def pytest_configure(config):
    """A SIGTERM (or SIGHUP) to pytest ends the run as Ctrl-C does: the session's finalizers run,
    and the database, vhost, MongoDB storage and processes of this run go with it. (Without this,
    pytest dies at once; the processes it started would still die with it, see die_with_parent,
    but what they created would stay.)"""
    if threading.current_thread() is threading.main_thread():
        exit_on_signals(exception=KeyboardInterrupt)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class MailCatcher:
    """A real SMTP server (aiosmtpd) that keeps what it receives; `hold()` makes it a slow one."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        # Each message with the envelope recipients it was sent to (RCPT TO), which is who gets it,
        # whatever its headers say.
        self.deliveries: list[tuple[tuple[str, ...], Message]] = []
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._refused: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self._refused:
            return "550 5.1.1 mailbox unavailable"  # permanent: the client must not retry
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        while not self._open.is_set():  # a slow server: the client waits for the answer
            await asyncio.sleep(0.05)
        with self._lock:
            # The modern policy decodes headers: a name outside ASCII (the fuzzer signs such users up)
            # arrives RFC 2047-encoded, which the legacy policy would hand back as a Header object.
            message = message_from_bytes(envelope.content, policy=policy.default)
            self.messages.append(message)
            self.deliveries.append((tuple(envelope.rcpt_tos), message))
        return "250 OK"

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Answer no message until the block ends (keep it shorter than the mailer's SMTP timeout)."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    @contextmanager
    def refuse(self, address: str) -> Iterator[None]:
        """Refuse `address` permanently (550) until the block ends, as a misconfigured server would."""
        self._refused.add(address.lower())
        try:
            yield
        finally:
            self._refused.discard(address.lower())

    def to(self, address: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if address in (m["To"] or "")]


@pytest.fixture(scope="session")
def services() -> Iterator[dict]:
    """Postgres database, RabbitMQ vhost, MongoDB-wire server and SMTP catcher of this run."""
    from shared.infra.db import drop_database
    from shared.infra.migrate import upgrade

    upgrade(TEST_ENV["DATABASE_URL"])
    # The run's development key (every scope), as `make dev` writes one: the test client, the
    # HTTP helpers and every subprocess (which inherit the environment) call with it.
    from shared.infra import api_keys
    from shared.infra.db import session_scope

    with session_scope() as session:
        _, os.environ["PULSE_API_KEY"] = api_keys.create(session, list(api_keys.SCOPES), name="tests")
    rabbitmqctl("add_vhost", VHOST)
    rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    # Its own group, gone with pytest even when that is killed with SIGKILL (see Server.start).
    mongo = PrivateMongo(port=MONGO_PORT).start()
    catcher = MailCatcher()
    smtp = Controller(catcher, hostname="127.0.0.1", port=SMTP_PORT)
    smtp.start()
    try:
        yield {"mail": catcher}
    finally:
        smtp.stop()
        mongo.remove()  # stopped, its storage deleted
        rabbitmqctl("delete_vhost", VHOST)
        drop_database(TEST_ENV["DATABASE_URL"])
        r = redis_lib.Redis.from_url(TEST_ENV["REDIS_URL"])
        keys = list(r.scan_iter(match=TEST_ENV["CACHE_PREFIX"] + "*", count=1000))
        if keys:
            r.delete(*keys)


def spawn(args: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
    log = open(Path(tempfile.gettempdir()) / f"pulse-test-{name}.log", "wb")
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent())  # gone with pytest, even when it is killed


def celery_worker_args(app: str, queues: str, name: str, concurrency: int = 1) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, "-n", f"{name}@%h",
            "--concurrency", str(concurrency), "--without-mingle", "--without-gossip", "--loglevel", "WARNING"]


@pytest.fixture(scope="session")
def pipeline(services) -> Iterator[dict]:
    """The real asynchronous pipeline: outbox relay, worker and analytics worker subprocesses."""
    from tests.conftest import RUN_ID

    processes = {
        "relay": spawn([sys.executable, "-m", "services.api.outbox_relay"], "relay"),
        "worker": spawn(celery_worker_args("services.worker.main", "pulse.users,pulse.events", f"worker-{RUN_ID}", 2),
                        "worker"),
        "mailer": spawn(celery_worker_args("services.worker.main", "pulse.email", f"mailer-{RUN_ID}"), "mailer"),
        "analytics": spawn(celery_worker_args("services.analytics.main", "pulse.analytics", f"analytics-{RUN_ID}"),
                           "analytics"),
    }
    from shared.infra.celery_app import create_celery_app

    control = create_celery_app("pulse-test-control")
    try:
        wait_for(lambda: len(control.control.ping(timeout=1.0)) >= 3, timeout=90,
                 what="the three Celery workers to answer ping")
        yield processes
    finally:
        for process in processes.values():
            stop(process)


@pytest.fixture(scope="session")
def app(services):
    from services.api.app import create_app

    application = create_app()
    application.testing = True
    return application


def keyed_client(app):
    """A test client calling with the run's development key (every scope)."""
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {os.environ['PULSE_API_KEY']}"
    return test_client


@pytest.fixture()
def client(app):
    return keyed_client(app)


@pytest.fixture()
def anonymous_client(app):
    """The test client without a key."""
    return app.test_client()


@pytest.fixture(scope="module")
def api(request, services) -> Iterator[str]:
    """The base URL of an API process of the module's own (granian, as `make dev` runs it, with
    the run's settings; scripts.private_servers.ApiServer), for attacks over a real socket. A module
    that needs other settings defines its own `api` with `api_server(name, env)`."""
    with api_server(request.module.__name__.rsplit(".", 1)[-1]) as url:
        yield url


@pytest.fixture(scope="session")
def mongo(services):
    from shared.infra.mongo import get_database

    return get_database()


@pytest.fixture(scope="module")
def browser():
    """Headless chromium for a module's dashboard tests, skipped (failed under PULSE_REQUIRE_BROWSER)
    where Debian's chromium is missing."""
    from scripts import browser as browsers

    if not browsers.available():
        message = "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("PULSE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    driver = browsers.chromium()
    yield driver
    driver.quit()


@pytest.fixture()
def killable():
    """A worker of the test's own that SIGKILL can take down (tests.helpers.KillableWorker)."""
    from tests.helpers import KillableWorker  # tests.helpers imports this module

    worker = KillableWorker()
    try:
        yield worker
    finally:
        worker.stop()  # whatever the test did, no worker outlives it
