"""Servers of one's own: Postgres, RabbitMQ (one node or a cluster), Redis, SecantusDB, an SMTP
catcher and the API (granian), each on free ports with its data in a temporary directory,
startable, stoppable, killable and pausable. The test session (tests/fixtures.py), the fault and
attack tests, `make chaos` and the benches run against these, so a fault they inject never touches
a service they did not start (the machine's own Postgres, RabbitMQ and Redis), and every one of
them dies with the process that started it (scripts/lifetime.py).

Each server's `url` stays the same across restarts (same port, same data directory), as a
restarted production server would.
"""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.lifetime import die_with_parent, process_tree  # noqa: F401 - process_tree: scripts.chaos imports it here

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range when there is room. A server's port is
    chosen long before it is bound (Postgres and RabbitMQ start first), and kept across its
    restarts; a port from the ephemeral range (what binding port 0 gives) is also where every
    outgoing connection on the machine takes its source port, so on a busy machine one of them
    could hold it by then and the server would fail to start ("Address already in use")."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(10000, low) if low > 11000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use: another one
            return sock.getsockname()[1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class NotReady(TimeoutError, AssertionError):
    """A deadline passed before what was awaited happened. An AssertionError too, so that a test
    polling with `wait_for` fails as a failed assertion, and callers that add context to one
    (`except AssertionError`) still catch it."""


# The default deadline of a poll: long enough for what the pipeline promises to recover from by
# itself. After Redis is rolled back (tests/adversarial/test_cache_freshness.py does it to the
# run's Redis), a restored "drain scheduled" flag whose message already ran holds rescoring back
# for up to shared.pipeline.rescore.SCHEDULED_TTL_SECONDS (120 s); a profile that a later test
# waits for comes after that. A poll returns as soon as its condition holds.
WAIT_SECONDS = 180.0


def wait_for(predicate: Callable[[], object], timeout: float = WAIT_SECONDS, interval: float = 0.1,
             what: str = "condition"):
    """Poll until `predicate()` is truthy and return that value; raise NotReady naming `what` (and
    the last exception the predicate raised) when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - whatever is polled may not be up yet
            last = exc
        time.sleep(interval)
    raise NotReady(f"timed out after {timeout:g}s waiting for {what}" + (f" (last error: {last!r})" if last else ""))


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _owned_by(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for child in path.rglob("*"):
        shutil.chown(child, user, user)


class Server:
    """A process of our own: `start()` (again after `stop()`/`kill()`), `pause()`/`resume()`."""

    name = "server"
    stop_signal = signal.SIGTERM
    cwd: Path | None = None  # where the command runs (None: this process's working directory)

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = root or Path(tempfile.mkdtemp(prefix=f"pulse-{self.name}-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.log = self.root / f"{self.name}.log"

    # -- to implement
    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return accepts(self.port)

    # -- lifecycle
    def start(self, timeout: float = 120) -> "Server":
        with open(self.log, "ab") as log:
            # Its own session (stopped, paused and killed as a group), and SIGTERM when the process
            # that started it dies, however (runuser, which starts Postgres and RabbitMQ here,
            # passes the signal on to the server it runs).
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=self.environment(), cwd=self.cwd, start_new_session=True,
                                            preexec_fn=die_with_parent())

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} (log: {self.log})")
            return self.ready()

        try:
            wait_for(up, timeout, interval=0.2, what=f"{self.name} on :{self.port} (log: {self.log})")
        except NotReady as exc:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} (log: {self.log})") from exc
            raise
        return self

    def environment(self) -> dict:
        return dict(os.environ)

    def pids(self) -> list[int]:
        """Every process of the server."""
        if self.process is None or self.process.poll() is not None:
            return []
        return process_tree(self.process.pid)

    def stop(self, timeout: float = 30) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            os.killpg(self.process.pid, self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                # The whole tree: Postgres' backends run in sessions of their own.
                _signal_all(self.pids(), signal.SIGKILL)
                self.process.wait()
        self.wait_port_closed()

    def kill(self) -> None:
        """SIGKILL to every process of the server, as a crash of the machine would."""
        if self.process is not None and self.process.poll() is None:
            _signal_all(self.pids(), signal.SIGKILL)
            self.process.wait()
        self.wait_port_closed()

    def wait_port_closed(self, timeout: float = 30) -> None:
        wait_for(lambda: not accepts(self.port), timeout, interval=0.2, what=f"{self.name} to release :{self.port}")

    def pause(self) -> None:
        """SIGSTOP every process of the server: it holds its connections and answers nothing.
        Until no new process appears: one forked meanwhile (a Postgres backend) is stopped too."""
        stopped: set[int] = set()
        while True:
            fresh = [pid for pid in self.pids() if pid not in stopped]
            if not fresh:
                return
            _signal_all(fresh, signal.SIGSTOP)
            stopped.update(fresh)

    def resume(self) -> None:
        _signal_all(self.pids(), signal.SIGCONT)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivatePostgres(Server):
    """A Postgres cluster of its own (initdb as the postgres user; trust auth on 127.0.0.1)."""

    name = "postgres"
    stop_signal = signal.SIGINT  # Postgres' "fast" shutdown: roll back open transactions, checkpoint, exit

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root)
        self.data = self.root / "data"
        _owned_by(self.root, "postgres")
        self._run(PG_BIN / "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\n"
                       "fsync = on\nmax_connections = 200\n")

    def _run(self, *args) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        # The postmaster itself (not pg_ctl), so that it is our child: stopped, paused and killed
        # through its process tree.
        return ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(self.data)]

    def ready(self) -> bool:
        return subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0


class PrivateRedis(Server):
    """Redis with no persistence, as the machine's own runs (a restart empties it)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", str(self.root)]


class PrivateMongo(Server):
    """SecantusDB (the MongoDB wire protocol) with its own storage, fsynced at each commit."""

    name = "mongo"

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        super().__init__(root, port)
        (self.root / "data").mkdir(exist_ok=True)

    def mongo_uri(self, database: str) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def command(self) -> list[str]:
        return [str(BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(self.port), "--storage-path",
                str(self.root / "data"), "--standalone", "--sync-on-commit"]

    def ready(self) -> bool:
        from pymongo import MongoClient

        with MongoClient(f"mongodb://127.0.0.1:{self.port}", serverSelectionTimeoutMS=500) as client:
            return bool(client.admin.command("ping"))


class PrivateMailCatcher(Server):
    """aiosmtpd writing each message into a Maildir (as `make dev`'s catcher does)."""

    name = "mail"

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root)
        self.maildir = self.root / "maildir"
        for sub in ("tmp", "new", "cur"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.port}", "-c",
                "aiosmtpd.handlers.Mailbox", str(self.maildir)]

    def recipients(self) -> list[str]:
        """The address of every message received, one entry per message."""
        import mailbox
        from email.utils import parseaddr

        return [parseaddr(str(message["To"]))[1].lower() for message in mailbox.Maildir(self.maildir, create=False)]


class ApiServer(Server):
    """The API as `make dev` and production run it: granian, one worker process with `threads`
    blocking threads, on a real socket, with this process's settings plus `env` on top. A process
    has its own memory (key cache, rate limits), so two of them are two API processes."""

    name = "api"
    cwd = ROOT  # granian imports `services.api.wsgi` from the repository root

    def __init__(self, env: dict[str, str] | None = None, threads: int = 2, name: str = "api") -> None:
        self.name = name
        super().__init__()
        self.env = env or {}
        self.threads = threads

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(BIN / "granian"), "--interface", "wsgi", "--no-ws", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--blocking-threads", str(self.threads), "services.api.wsgi:app"]

    def environment(self) -> dict:
        environment = {**os.environ, **self.env}
        # One worker process: its metrics are its own, with no folder shared between processes.
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return environment

    def ready(self) -> bool:
        import requests

        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False


@contextmanager
def api_server(name: str, env: dict[str, str] | None = None, threads: int = 4) -> Iterator[str]:
    """An ApiServer for the length of the block: yields its base URL, then stops it and removes
    its folder (its log is there while it runs)."""
    server = ApiServer(env, threads, name)
    try:
        server.start()
        yield server.url
    finally:
        server.remove()


class PrivateRabbit(Server):
    """A RabbitMQ node of its own (node name, ports, data, no plugins). Debian's scripts run every
    node and rabbitmqctl as the rabbitmq user with its home, hence its Erlang cookie: nodes made
    here can be joined into a cluster with `join(first)`."""

    name = "rabbit"

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root)
        self.node = f"pulse-{self.port}@localhost"
        self.dist_port = free_port()
        for sub in ("mnesia", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
            # A node of a small test cluster must not refuse work when the disk is "low".
            "disk_free_limit.absolute = 50MB\n")
        _owned_by(self.root, "rabbitmq")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def environment(self) -> dict:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.root / "feature_flags"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"),
        }

    def command(self) -> list[str]:
        return ["rabbitmq-server"]

    def ready(self) -> bool:
        from kombu import Connection

        with Connection(self.url, connect_timeout=1) as conn:
            conn.ensure_connection(max_retries=1)
            return True

    def ctl(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self.environment(), capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node}: {result.stderr or result.stdout}")
        return result.stdout

    def join(self, first: "PrivateRabbit") -> None:
        self.ctl("stop_app")
        self.ctl("reset")
        self.ctl("join_cluster", first.node)
        self.ctl("start_app")

    def stop(self, timeout: float = 60) -> None:
        # rabbitmqctl stop: the node leaves cleanly (a cluster peer sees it go, not time out).
        if self.process is not None and self.process.poll() is None:
            self.resume()
            try:
                self.ctl("stop", timeout=timeout)
                self.process.wait(timeout)
            except (RuntimeError, subprocess.TimeoutExpired):
                # `su` runs the broker in a session of its own: signal the tree, not the group.
                _signal_all(self.pids(), signal.SIGKILL)
                self.process.wait()
        self.wait_port_closed()


class RabbitCluster:
    """Three (or `size`) RabbitMQ nodes clustered together on this machine."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [PrivateRabbit() for _ in range(size)]

    def start(self) -> "RabbitCluster":
        first, *others = self.nodes
        first.start()
        for node in others:
            node.start()
            node.join(first)
        return self

    @property
    def url(self) -> str:
        # kombu fails over between the hosts of a ';'-separated URL.
        return ";".join(node.url for node in self.nodes)

    def running_nodes(self) -> str:
        return self.nodes[0].ctl("cluster_status")

    def remove(self) -> None:
        errors = []
        for node in reversed(self.nodes):
            try:
                node.remove()
            except Exception as exc:  # noqa: BLE001 - every node is removed whatever one does
                errors.append(exc)
                node.kill()
                shutil.rmtree(node.root, ignore_errors=True)
        if errors:
            raise errors[0]
