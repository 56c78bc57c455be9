"""bench/scale.py runs end to end (at toy sizes: the figures only mean something at the default
ones, outside `make test`): its private stack starts from the Procfile, the backfill loads each
population, fits and rescoring finish, and it prints every figure and verdict.

It runs on a busy machine (a busy-loop child keeps one core at 100% throughout): the toy run measures
without waiting for idle CPUs (`--no-idle-wait`), which a shared machine may never have. And it
leaves nothing behind, however it ends: done, stopped with SIGTERM half-way, or orphaned by a parent
killed with SIGKILL, no process of its tree (each carries a marker in its environment), no database,
vhost, Redis key or folder remains."""
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import psycopg.sql
import pytest
import redis as redis_lib

from scripts import lifetime
from tests.fixtures import ROOT, wait_for

MARKER = "PULSE_TEST_BENCH_MARKER"
TOY = {"BENCH_SCALE_SIZES": "300,1200", "BENCH_MISSES": "20", "BENCH_BURST": "20"}
RUN_TIMEOUT = 900  # about 2 minutes on two busy cores; the margin is for a slower machine
RUN_LINE = re.compile(r"private stack: database and vhost (\S+), Redis keys (\S+)\*, folder (\S+?)[;\n]")


def bench_env(marker: str) -> dict:
    env = {**os.environ, **TOY, MARKER: marker}
    for name in ("DATABASE_URL", "BROKER_URL", "MONGO_URI", "CACHE_PREFIX", "QUEUE_PREFIX"):
        env.pop(name, None)  # the bench sets up its own
    return env


@pytest.fixture()
def cpu_hog():
    """One core kept busy for the whole test, as another job on a shared machine would."""
    hog = lifetime.start([sys.executable, "-c", "while True: pass"])
    try:
        yield hog
    finally:
        lifetime.end(hog, grace=5)


def marked_processes(marker: str) -> list[str]:
    """Command lines of the processes whose environment carries the marker (every process the
    bench's tree started inherits it: honcho, SecantusDB, granian and its workers, Celery and its
    pool)."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile
            continue
    return found


def what_remains(name: str, key_prefix: str, folder: str) -> dict:
    """The bench's database, vhost, Redis keys and folder that still exist."""
    server = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432").replace("+psycopg", "")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        databases = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname = %s", (name,))]
    vhosts = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=True,
                            timeout=120).stdout.split()
    keys = list(redis_lib.Redis.from_url(os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0"))
                .scan_iter(match=key_prefix + "*", count=10_000))
    remains = {"database": databases, "vhost": [v for v in vhosts if v == name], "redis keys": keys[:5],
               "folder": [folder] if Path(folder).exists() else []}
    return {what: found for what, found in remains.items() if found}


def scrub(marker: str, output: str) -> None:
    """Whatever a failed bench left, removed (the test's own finalizer: it must not leak either)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"{MARKER}={marker}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
    match = RUN_LINE.search(output)
    if not match:
        return
    name, key_prefix, folder = match.groups()
    server = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432").replace("+psycopg", "")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=120)
    redis = redis_lib.Redis.from_url(os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0"))
    for key in redis.scan_iter(match=key_prefix + "*", count=10_000):
        redis.delete(key)
    shutil.rmtree(folder, ignore_errors=True)


def assert_nothing_left(marker: str, output: str) -> None:
    match = RUN_LINE.search(output)
    assert match, output[-3000:]
    name, key_prefix, folder = match.groups()
    # Processes first: the last ones may take a moment to exit after their parent did.
    wait_for(lambda: not marked_processes(marker), timeout=60, interval=0.5,
             what=f"every process of the bench to exit (left: {marked_processes(marker)})")
    assert what_remains(name, key_prefix, folder) == {}


@pytest.mark.timeout(RUN_TIMEOUT + 120)
def test_the_scale_benchmark_runs_at_toy_sizes_on_a_busy_machine(services, cpu_hog):
    marker = uuid.uuid4().hex
    try:
        result = lifetime.run([sys.executable, "bench/scale.py", "--no-idle-wait"], timeout=RUN_TIMEOUT, grace=90,
                              cwd=ROOT, env=bench_env(marker))
    except subprocess.TimeoutExpired as exc:
        scrub(marker, exc.output or "")
        raise
    out = result.stdout
    if result.returncode != 0:
        scrub(marker, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1,200 purchases" in out and "300 purchases" in out
    for figure in ("miss p50 at 1,200 vs 300 purchases", "rescoring at 1,200 vs 300", "two analytics processes",
                   "fit:", "20 signups in a burst", "each round at once, busy machine or not (--no-idle-wait)"):
        assert figure in out, figure
    assert_nothing_left(marker, out)


def start_and_wait_until_up(args: list[str], marker: str, log: Path) -> subprocess.Popen:
    """Start `args` (the bench, or a parent of it) with its output in `log`; return once the bench's
    private stack is up and running, with its database, processes and folder there to remove."""
    with open(log, "w") as out:
        process = lifetime.start(args, cwd=ROOT, env=bench_env(marker), stdout=out, stderr=subprocess.STDOUT)

    def up():
        assert process.poll() is None, \
            f"exited {process.returncode} before its stack was up:\n{log.read_text()[-3000:]}"
        return "private stack up:" in log.read_text()

    try:
        wait_for(up, timeout=300, interval=0.5, what=f"the bench's private stack (log {log})")
        match = RUN_LINE.search(log.read_text())
        name, _, folder = match.groups()
        # Something to clean up: the stack's processes, its folder and its database exist.
        assert len(marked_processes(marker)) >= 8, marked_processes(marker)
        assert Path(folder).is_dir()
        assert "database" in what_remains(name, "no-such-prefix:", folder)
    except BaseException:
        lifetime.end(process, grace=90)
        scrub(marker, log.read_text())
        raise
    return process


@pytest.mark.timeout(600)
def test_a_bench_stopped_with_sigterm_half_way_leaves_nothing(services, cpu_hog, tmp_path):
    marker = uuid.uuid4().hex
    log = tmp_path / "bench.log"
    bench = start_and_wait_until_up([sys.executable, "bench/scale.py", "--no-idle-wait"], marker, log)
    try:
        os.kill(bench.pid, signal.SIGTERM)  # the bench alone, as `kill PID` does: it stops its own tree
        bench.wait(180)
        assert bench.returncode == 128 + signal.SIGTERM, log.read_text()[-3000:]
        assert "signups in a burst" not in log.read_text(), log.read_text()[-3000:]
        assert_nothing_left(marker, log.read_text())
    finally:
        lifetime.end(bench, grace=30)
        scrub(marker, log.read_text())


@pytest.mark.timeout(600)
def test_a_bench_whose_parent_is_killed_with_sigkill_leaves_nothing(services, cpu_hog, tmp_path):
    """The parent (pytest itself, in a run killed by a CI runner's timeout) dies without a word:
    the kernel sends the bench SIGTERM (die_with_parent), and the bench stops its tree and removes
    what it created."""
    marker = uuid.uuid4().hex
    log = tmp_path / "bench.log"
    parent_code = ("import sys; from scripts import lifetime; "
                   "sys.exit(lifetime.start([sys.executable, 'bench/scale.py', '--no-idle-wait']).wait())")
    parent = start_and_wait_until_up([sys.executable, "-c", parent_code], marker, log)
    try:
        parent.kill()
        parent.wait(30)
        # The bench's clean-up takes a while (honcho stops the stack, the database is dropped).
        wait_for(lambda: not marked_processes(marker), timeout=180, interval=0.5,
                 what=f"every process of the orphaned bench to exit (left: {marked_processes(marker)})")
        # Stopped half-way by the signal, not gone because it ran to the end meanwhile.
        assert "signups in a burst" not in log.read_text(), log.read_text()[-3000:]
        assert_nothing_left(marker, log.read_text())
    finally:
        lifetime.end(parent, grace=30)
        scrub(marker, log.read_text())
