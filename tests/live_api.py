"""The API as `make dev` runs it (granian, a real socket), for the attack tests of this folder."""
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from tests.conftest import TEST_ENV, free_port
from tests.fixtures import BIN, spawn, stop, wait_for


@contextmanager
def api_server(name: str, env: dict[str, str] | None = None, threads: int = 4) -> Iterator[str]:
    """A granian API process with the run's settings and `env` on top; yields its base URL and
    stops it when the block ends."""
    port = free_port()
    server = spawn([str(BIN / "granian"), "--interface", "wsgi", "--no-ws", "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1", "--blocking-threads", str(threads), "services.api.wsgi:app"],
                   name, {**TEST_ENV, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/health", timeout=2).ok, timeout=60, what=f"the API server {name}")
        yield url
    finally:
        stop(server)
