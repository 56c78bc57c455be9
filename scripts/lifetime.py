"""Every process tree a test, a bench or the chaos run starts dies with it.

Three pieces, used by tests/fixtures.py, scripts/private_servers.py, scripts/chaos.py, bench/scale.py
and the tests that run the benches and the chaos run:

* `die_with_parent()`: a `preexec_fn` asking Linux to send the child SIGTERM when the process that
  started it dies, however it dies (SIGKILL, pytest-timeout's `os._exit`, an OOM kill). A child that
  handles SIGTERM (honcho, Celery, the bench itself) then stops what it started in turn.
* `exit_on_signals()`: SIGTERM and SIGHUP raise SystemExit in the main thread, once, so that the
  `finally:` blocks and fixture finalizers that remove databases, vhosts and folders run; a second
  signal during that clean-up is ignored instead of cutting it short.
* `start()` / `run()` / `end()`: a child in a process group of its own (start_new_session), ended
  as a whole: SIGTERM to the group first (the child cleans up), then, after a grace period, SIGKILL
  to the group and to every process seen in its tree (a process that called setsid, as honcho's
  children and Postgres' backends do, has left the group but not the tree).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PR_SET_PDEATHSIG = 1
_prctl = None
if sys.platform.startswith("linux"):
    try:
        # Looked up here, in the parent: the preexec function only calls it (little to do between
        # fork and exec, where another thread may hold a lock).
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        _prctl = None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn: the child receives `sig` when this process dies. None where it cannot work:
    off Linux, and off the main thread (Linux sends the signal when the creating *thread* exits,
    which for a helper thread would be long before the process does)."""
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()
    number = int(sig)

    def preexec() -> None:
        _prctl(PR_SET_PDEATHSIG, number, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody will signal
            os.kill(os.getpid(), number)

    return preexec


def exit_on_signals(signals: Iterable[int] = (signal.SIGTERM, signal.SIGHUP), exception: type = SystemExit) -> None:
    """Turn `signals` into `exception` (SystemExit(128 + signal) by default) in the main thread, the
    first time only: the clean-up it triggers is not interrupted by the next one."""
    fired = []

    def handler(number, _frame):
        # Not SIG_IGN for the next ones: an ignored signal stays ignored in the children the
        # clean-up starts, a handled one is reset to the default at their exec.
        if fired:
            return
        fired.append(number)
        if exception is SystemExit:
            raise SystemExit(128 + number)
        raise exception()

    for sig in signals:
        signal.signal(sig, handler)


def _start_time(pid: int) -> str | None:
    """The process' start time (field 22 of /proc/PID/stat): with the pid, it names one process,
    not whichever later reuses the pid."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it (Postgres' backends and honcho's children call
    setsid, so a process group does not hold them all)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def start(args: list[str], **kwargs) -> subprocess.Popen:
    """Popen in a process group of its own that dies with this process."""
    kwargs.setdefault("preexec_fn", die_with_parent())
    return subprocess.Popen(args, start_new_session=True, **kwargs)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end(process: subprocess.Popen, grace: float = 60.0, first: int = signal.SIGTERM) -> None:
    """End `process` (a group leader, see start) and everything it started: `first` to its group,
    up to `grace` seconds for it to exit (and clean up after itself), then SIGKILL to the group and
    to every process seen in its tree meanwhile."""
    seen: dict[int, str | None] = {}

    def look() -> None:
        for pid in process_tree(process.pid):
            seen.setdefault(pid, _start_time(pid))

    if process.poll() is None:
        look()
        try:
            os.killpg(process.pid, first)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < deadline:
            look()
            time.sleep(0.2)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid, started in seen.items():
        if pid != process.pid and started is not None and _start_time(pid) == started:
            _signal(pid, signal.SIGKILL)
    process.wait()


def run(args: list[str], timeout: float, grace: float = 60.0, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output=True, text=True) for a child that starts processes of its own:
    on the timeout, or on any exception here (pytest-timeout's, a KeyboardInterrupt), the child's
    whole tree is ended through `end` (SIGTERM first, so it removes what it created), not only the
    child killed. Raises subprocess.TimeoutExpired with the output so far."""
    process = start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end(process, grace)
        stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(args, timeout, output=stdout, stderr=stderr) from None
    except BaseException:
        end(process, grace)
        raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
