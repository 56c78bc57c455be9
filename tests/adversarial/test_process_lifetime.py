"""The promise (docs/testing.md) that every process tree a test, a bench or the chaos run starts dies with it,
attacked the way careless children and rude parents would: a child that ignores SIGTERM and hides a
grandchild in a session of its own, a parent killed with SIGKILL, a second SIGTERM in the middle of
the clean-up, a child that outlives its timeout. Each process here carries a marker in its
environment; none may be left."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from scripts import lifetime
from tests.fixtures import ROOT, wait_for

MARKER = "PULSE_TEST_LIFETIME_MARKER"

# A child that ignores SIGTERM and starts a grandchild that calls setsid (leaving the group, as
# honcho's children and Postgres' backends do), which ignores SIGTERM too; both then wait forever.
STUBBORN = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('grandchild', flush=True); time.sleep(600)")
    subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    print("child", flush=True)
    time.sleep(600)
""")


def marked(marker: str) -> list[int]:
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie is gone, waiting for its parent to read its status
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture()
def marker():
    value = uuid.uuid4().hex
    yield value
    for pid in marked(value):  # whatever a failing test left
        os.kill(pid, signal.SIGKILL)


def env(marker: str) -> dict:
    return {**os.environ, MARKER: marker, "PYTHONPATH": str(ROOT)}


def test_end_kills_a_child_that_ignores_sigterm_and_a_grandchild_that_left_the_group(marker):
    child = lifetime.start([sys.executable, "-c", STUBBORN], env=env(marker), stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() in ("child", "grandchild")
    wait_for(lambda: len(marked(marker)) == 2, timeout=30, what="the child and its grandchild")
    started = time.monotonic()
    lifetime.end(child, grace=2)
    assert time.monotonic() - started < 30
    wait_for(lambda: not marked(marker), timeout=10, what=f"nothing left (left: {marked(marker)})")


def test_run_on_timeout_ends_the_whole_tree_and_reports_the_timeout(marker):
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        lifetime.run([sys.executable, "-c", STUBBORN], timeout=5, grace=1, env=env(marker))
    assert "child" in caught.value.output
    wait_for(lambda: not marked(marker), timeout=10, what=f"nothing left (left: {marked(marker)})")


def test_a_child_dies_with_a_parent_killed_with_sigkill(marker):
    # The parent starts a child that would sleep ten minutes, then is killed without a word.
    code = ("import sys, time; from scripts import lifetime; "
            "lifetime.start([sys.executable, '-c', 'import time; time.sleep(600)']); print('up', flush=True); "
            "time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], env=env(marker), stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "up"
        wait_for(lambda: len(marked(marker)) == 2, timeout=30, what="the parent and its child")
        parent.kill()
        parent.wait()
        wait_for(lambda: not marked(marker), timeout=10, what=f"the orphan to die (left: {marked(marker)})")
    finally:
        parent.kill()
        parent.wait()


def test_a_second_sigterm_does_not_cut_the_clean_up_short(marker, tmp_path):
    done = tmp_path / "cleaned"
    code = textwrap.dedent(f"""
        import time
        from scripts.lifetime import exit_on_signals
        exit_on_signals()
        try:
            print("up", flush=True)
            time.sleep(600)
        finally:
            print("cleaning", flush=True)
            time.sleep(2)  # a clean-up that takes a while: dropping a database, a vhost
            open({str(done)!r}, "w").write("yes")
    """)
    process = subprocess.Popen([sys.executable, "-c", code], env=env(marker), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "up"
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline().strip() == "cleaning"
        process.send_signal(signal.SIGTERM)  # impatient: again, during the clean-up
        process.send_signal(signal.SIGHUP)
        assert process.wait(30) == 128 + signal.SIGTERM
        assert done.read_text() == "yes"
    finally:
        process.kill()
        process.wait()


def test_a_child_started_off_the_main_thread_is_not_tied_to_that_thread(marker):
    """Linux sends the parent-death signal when the creating *thread* exits: a child started from a
    helper thread must not die when that thread ends, while its process lives on."""
    import threading

    holder = {}

    def spawn():
        holder["child"] = lifetime.start([sys.executable, "-c", "import time; time.sleep(600)"], env=env(marker))

    thread = threading.Thread(target=spawn)
    thread.start()
    thread.join()
    child = holder["child"]
    try:
        time.sleep(1)  # the thread is gone; a wrongly set parent-death signal would have fired by now
        assert child.poll() is None
    finally:
        lifetime.end(child, grace=2)
    assert not marked(marker)
