"""What the adversarial tests of the cache, the keys and the dashboard share: API servers over real
HTTP (in this process, or as granian processes of their own, each with its own memory) and Redis
rolled back to an earlier copy of every key Pulse holds in it."""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis as redis_lib
import requests
from werkzeug.serving import make_server

from scripts.private_servers import Server
from tests.conftest import TEST_ENV, free_port

BIN = Path(sys.executable).parent


@contextmanager
def serve(app) -> Iterator[str]:
    """The test process's app over HTTP on a free port (its memory is the test's to inspect)."""
    http = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()


class ApiProcess(Server):
    """The API as it runs in production: granian, one worker process, the run's settings plus
    `env` (a process has its own key memory, so two of them are two API processes)."""

    name = "api"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.env = env or {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(BIN / "granian"), "--interface", "wsgi", "--no-ws", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--blocking-threads", "2", "services.api.wsgi:app"]

    def environment(self) -> dict:
        environment = {**os.environ, **self.env}
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return environment

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def start(self, timeout: float = 120) -> ApiProcess:
        # granian runs from the repository root, where `services` is importable.
        previous = os.getcwd()
        os.chdir(Path(__file__).resolve().parents[2])
        try:
            return super().start(timeout)
        finally:
            os.chdir(previous)


def pulse_keys(redis: redis_lib.Redis, prefix: str = TEST_ENV["CACHE_PREFIX"]) -> list[bytes]:
    return list(redis.scan_iter(match=prefix + "*", count=1000))


def snapshot(redis: redis_lib.Redis) -> dict[bytes, tuple[bytes, int]]:
    """Every key Pulse holds (this run's prefix), as DUMP gives it, with its time to live."""
    taken = {}
    for name in pulse_keys(redis):
        dumped, ttl = redis.dump(name), redis.pttl(name)
        if dumped is not None:
            taken[name] = (dumped, ttl)
    return taken


def roll_back(redis: redis_lib.Redis, taken: dict[bytes, tuple[bytes, int]]) -> None:
    """Redis as it was at `snapshot`: what was written since is gone, what was deleted is back
    (as a restart from that snapshot, or a failover to a replica that stopped there, leaves it)."""
    current = pulse_keys(redis)
    if current:
        redis.delete(*current)
    for name, (dumped, ttl) in taken.items():
        redis.restore(name, max(ttl, 0), dumped, replace=True)
