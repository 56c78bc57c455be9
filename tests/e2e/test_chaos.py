"""The chaos run, shortened: `pulse chaos` as `make chaos` runs it, every fault once in
about a minute of load, on a stack of its own. Its reconciliation must find nothing lost, nothing
duplicated (beyond the documented welcome-e-mail window), no 5xx but 503s with Retry-After, no
dead letter, and counters equal to a recount."""
import json

import pytest

from scripts import lifetime
from scripts.chaos import FAULTS
from tests.fixtures import PULSE, ROOT


@pytest.mark.timeout(960)
def test_a_short_chaos_run_loses_and_duplicates_nothing(tmp_path):
    report = tmp_path / "chaos.json"
    # lifetime.run: on the timeout (or pytest-timeout's) the chaos run gets SIGTERM and removes its
    # stack, servers and folders, then its whole tree gets SIGKILL; subprocess.run would kill it alone.
    run = lifetime.run([PULSE, "chaos", "--duration", "75", "--seed", "20261128",
                        "--json", str(report)], cwd=ROOT, timeout=840, grace=60)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    result = json.loads(report.read_text())
    assert sorted(result["faults"]) == sorted(FAULTS)
    assert result["signups_accepted"] > 0 and result["events_accepted"] > 0
    assert result["signups_lost"] == [] and result["profiles_missing"] == [] and result["welcome_missing"] == []
    assert result["events_lost"] == 0 and result["events_duplicated"] == 0 and result["events_unknown"] == 0
    assert result["summaries_check"] == 0 and result["bad_5xx"] == [] and result["dead_letters"] == []
    assert result["welcome_same_message_twice"] <= result["mailer_windows"]
    assert "verdict: nothing lost, nothing duplicated" in run.stdout
