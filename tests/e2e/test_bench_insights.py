"""bench/insights.py runs end to end at toy sizes (the figures only mean something at the default ones,
100,000 persons and 1,000,000 events, outside `make test`): its private Postgres and SecantusDB start,
the population loads into both stores at each size, Pulse's funnel and retention answers and the
reference aggregations' are timed, printed and found to agree exactly; and it leaves nothing behind,
run to the end or stopped with SIGTERM half-way (no process of its servers, no folder, no Redis key).
Its comparison itself can fail: a Pulse answer one person off is reported, naming the cell."""
import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib

from scripts import lifetime
from tests.fixtures import ROOT, wait_for

TOY = {"BENCH_INSIGHTS_PERSONS": "1500", "BENCH_INSIGHTS_EVENTS": "4000,12000", "BENCH_INSIGHTS_REPEAT": "1"}
RUN_TIMEOUT = 600  # about a minute on two busy cores
SERVERS_LINE = re.compile(r"private servers: Postgres (\S+), SecantusDB (\S+), Redis keys (\S+)\*")


def bench_env() -> dict:
    env = {**os.environ, **TOY}
    for name in ("DATABASE_URL", "MONGO_URI", "CACHE_PREFIX"):
        env.pop(name, None)  # the bench sets up its own
    return env


def what_remains(output: str) -> dict:
    """The bench's server folders, the processes running from them, and its Redis keys, that still exist."""
    match = SERVERS_LINE.search(output)
    assert match, output[-3000:]
    postgres, mongo, key_prefix = match.groups()
    processes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if postgres in cmdline or mongo in cmdline:
            processes.append(cmdline)
    keys = list(redis_lib.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
                .scan_iter(match=key_prefix + "*", count=10_000))
    remains = {"processes": processes, "folders": [f for f in (postgres, mongo) if Path(f).exists()],
               "redis keys": keys[:5]}
    return {what: found for what, found in remains.items() if found}


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_the_insights_benchmark_runs_at_toy_sizes_and_both_sides_agree():
    result = lifetime.run([sys.executable, "bench/insights.py"], timeout=RUN_TIMEOUT, grace=60, cwd=ROOT,
                          env=bench_env())
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "4,000 events: loaded" in out and "12,000 events: loaded" in out
    for name in ("funnel", "retention first_event", "retention signup"):
        # One line per size with both times, the ratio and the verdict; then its growth.
        rows = re.findall(rf"^  {name} +reference +[\d.]+ ms +Pulse +[\d.]+ ms +reference/Pulse +[\d.]+x +agree$",
                          out, re.MULTILINE)
        assert len(rows) == 2, (name, out[-3000:])
        assert re.search(rf"^{name} +events x3: reference x[\d.]+, Pulse x[\d.]+$", out, re.MULTILINE), name
    assert "Pulse and the reference agree exactly at every size" in out
    wait_for(lambda: not what_remains(out), timeout=60, interval=0.5, what=f"nothing left ({what_remains(out)})")


@pytest.mark.timeout(300)
def test_the_insights_benchmark_stopped_with_sigterm_half_way_leaves_nothing(tmp_path):
    log = tmp_path / "bench.log"
    with open(log, "w") as out:
        bench = lifetime.start([sys.executable, "bench/insights.py", "--reference-only"], cwd=ROOT,
                               env={**bench_env(), "BENCH_INSIGHTS_EVENTS": "4000,400000"}, stdout=out,
                               stderr=subprocess.STDOUT)
    try:
        # Half-way: the servers are up and the second size is loading.
        wait_for(lambda: bench.poll() is None and "4,000 events: loaded" in log.read_text(), timeout=240,
                 interval=0.5, what=f"the first size measured (log {log}: {log.read_text()[-2000:]})")
        assert what_remains(log.read_text()).get("processes"), "the servers should be running"
        os.kill(bench.pid, signal.SIGTERM)
        bench.wait(120)
        assert bench.returncode == 128 + signal.SIGTERM, log.read_text()[-3000:]
        assert "400,000 events: loaded" not in log.read_text()
        wait_for(lambda: not what_remains(log.read_text()), timeout=60, interval=0.5,
                 what=f"nothing left ({what_remains(log.read_text())})")
    finally:
        lifetime.end(bench, grace=30)


def test_a_pulse_answer_one_person_off_is_a_reported_disagreement(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # where `python bench/insights.py` finds _common
    spec = importlib.util.spec_from_file_location("bench_insights", ROOT / "bench" / "insights.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    reference = {"steps": [
        {"event_type": "page_view", "persons": 8, "conversion_from_previous": 1.0, "conversion_from_first": 1.0,
         "median_seconds_to_convert": None},
        {"event_type": "trial_started", "persons": 3, "conversion_from_previous": 0.375,
         "conversion_from_first": 0.375, "median_seconds_to_convert": 90.5}], "breakdown": None}
    assert bench.differences("funnel", reference, reference) == []
    # 1/32 = 0.03125: Postgres rounds half up (0.0313), Python's round() to even (0.0312): both "rounded".
    halves = {"steps": [{**reference["steps"][0], "persons": 32},
                        {**reference["steps"][1], "persons": 1, "median_seconds_to_convert": 90.5}],
              "breakdown": None}
    for rounded in (0.0312, 0.0313):
        pulse = {"steps": [halves["steps"][0], {**halves["steps"][1], "conversion_from_previous": rounded,
                                                "conversion_from_first": rounded}], "breakdown": None}
        assert bench.differences("funnel", pulse, halves) == []
    off = {"steps": [reference["steps"][0], {**reference["steps"][1], "persons": 4}], "breakdown": None}
    assert bench.differences("funnel", off, reference) == [
        "funnel step 2 (trial_started): Pulse trial_started 4 persons, reference 3"]
    slower = {"steps": [reference["steps"][0], {**reference["steps"][1], "median_seconds_to_convert": 91.0}],
              "breakdown": None}
    assert bench.differences("funnel", slower, reference) == [
        "funnel step 2 (trial_started): median Pulse 91.0, reference 90.5"]

    matrix = {"period": "week", "cohort_type": "signup", "event_type": None, "cohorts": [
        {"cohort": "2026-11-23", "size": 4, "active": [4, 1], "rates": [1.0, 0.25]}]}
    assert bench.differences("retention signup", matrix, matrix) == []
    cell = {**matrix, "cohorts": [{**matrix["cohorts"][0], "active": [4, 2], "rates": [1.0, 0.5]}]}
    assert bench.differences("retention signup", cell, matrix) == [
        "retention signup cohort 2026-11-23: Pulse size 4 active [4, 2], reference size 4 active [4, 1]"]
    longer = {**matrix, "cohorts": [{**matrix["cohorts"][0], "active": [4, 1, 0], "rates": [1.0, 0.25, 0.0]}]}
    assert bench.differences("retention signup", longer, matrix) != []  # a period that has not begun
