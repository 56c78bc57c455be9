"""Promise (docs/metrics.md): `/metrics` and `/health/ready` need no key, and however many callers
hit them, an API process reads each store at most once a second for them.

Attacked over HTTP: 8 threads call both endpoints as fast as they can for a few seconds against
an API server whose RabbitMQ and Postgres are reached through counting TCP proxies. What reaches
the stores is counted where it arrives: AMQP connections opened, and Postgres statements sent
(Execute and simple-Query messages of the wire protocol)."""
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from scripts.private_servers import api_server
from tests.conftest import TEST_ENV

SECONDS = 4.0
THREADS = 8
SSL_REQUEST, GSS_REQUEST = 80877103, 80877104


class CountingProxy:
    """A TCP forwarder to `target` that counts the connections it accepts and, for Postgres, the
    statements clients send (the protocol's 'E' Execute and 'Q' Query messages)."""

    def __init__(self, target: tuple[str, int], postgres: bool = False):
        self.target, self.postgres = target, postgres
        self.connections = 0
        self.statements = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.connections = self.statements = 0

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, self.postgres), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, parse: bool) -> None:
        buffer, started = b"", False
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if not parse:
                    continue
                buffer += data
                while True:
                    if not started:  # untyped: SSL/GSS requests, then the startup message
                        if len(buffer) < 8:
                            break
                        length, code = struct.unpack("!ii", buffer[:8])
                        if len(buffer) < length:
                            break
                        buffer = buffer[length:]
                        started = code not in (SSL_REQUEST, GSS_REQUEST)
                        continue
                    if len(buffer) < 5:
                        break
                    kind, length = buffer[:1], struct.unpack("!i", buffer[1:5])[0]
                    if len(buffer) < 1 + length:
                        break
                    if kind in (b"E", b"Q"):
                        with self._lock:
                            self.statements += 1
                    buffer = buffer[1 + length:]
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._server.close()
        with self._lock:
            for s in self._sockets:
                s.close()


def through(url: str, port: int, query: str = "") -> str:
    parts = urlsplit(url)
    netloc = f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}" if "@" in parts.netloc else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query or parts.query, ""))


@pytest.fixture(scope="module")
def stack(services):
    broker, database = urlsplit(TEST_ENV["BROKER_URL"]), urlsplit(TEST_ENV["DATABASE_URL"])
    amqp = CountingProxy((broker.hostname, broker.port or 5672))
    # Plain text on the wire so that the statements can be counted (the proxy is on loopback).
    postgres = CountingProxy((database.hostname, database.port or 5432), postgres=True)
    env = {"BROKER_URL": through(TEST_ENV["BROKER_URL"], amqp.port),
           "DATABASE_URL": through(TEST_ENV["DATABASE_URL"], postgres.port, "sslmode=disable&gssencmode=disable")}
    try:
        with api_server("adversarial-cost", env, threads=THREADS) as url:
            yield url, amqp, postgres
    finally:
        amqp.close()
        postgres.close()


def hammer(url: str, paths: list[str]) -> tuple[int, float]:
    """Every thread calls the paths in turn for SECONDS; (calls answered, seconds taken)."""
    deadline = time.monotonic() + SECONDS
    started = time.monotonic()

    def caller(_):
        session, calls = requests.Session(), 0
        while time.monotonic() < deadline:
            for path in paths:
                response = session.get(f"{url}{path}", timeout=30)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
                calls += 1
        return calls

    with ThreadPoolExecutor(THREADS) as pool:
        calls = sum(pool.map(caller, range(THREADS)))
    return calls, time.monotonic() - started


def test_the_stores_are_read_at_most_once_a_second_however_many_callers(stack):
    url, amqp, postgres = stack
    requests.get(f"{url}/metrics", timeout=30)  # the pool's connections exist before counting
    amqp.reset()
    postgres.reset()
    calls, elapsed = hammer(url, ["/metrics", "/health/ready"])
    seconds = elapsed + 1  # a read may fall on each edge of the window
    # One AMQP connection per reading: the scrape's dead-letter count and the readiness check.
    assert amqp.connections <= 2 * seconds + 1, (amqp.connections, calls, elapsed)
    # A reading is a few statements: readiness' SELECT 1; the scrape's outbox and rescoring
    # counts; each in its transaction (BEGIN, COMMIT/ROLLBACK).
    assert postgres.statements <= 8 * seconds + 4, (postgres.statements, calls, elapsed)
    # Without the shared readings every call would have opened one connection and run statements.
    assert calls >= 10 * amqp.connections, (calls, amqp.connections)


def test_a_burst_of_concurrent_probes_shares_one_reading(stack):
    url, amqp, postgres = stack
    time.sleep(1.1)  # let the last reading age past its second, so that the burst starts a new one
    amqp.reset()
    barrier = threading.Barrier(THREADS)

    def probe(_):
        barrier.wait()
        return requests.get(f"{url}/health/ready", timeout=30)

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(probe, range(THREADS)))
    assert all(a.status_code == 200 and a.json()["checks"]["rabbitmq"]["status"] == "ok" for a in answers)
    assert amqp.connections <= 2, amqp.connections  # one reading (two if the burst straddles a second)
