"""The API holds to its OpenAPI document, checked the way an outsider would: the document passes
openapi-spec-validator, and schemathesis (its CLI, every check) fuzzes every operation of the
running API server (granian, as `make dev` runs it) and finds nothing.

Bounded for `make test` (a fixed seed, a few dozen examples per operation); `make fuzz` runs it
longer against `make dev`.
"""
import os
import subprocess
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import validate

from tests.conftest import TEST_ENV
from tests.fixtures import BIN, ROOT, wait_for

# The API process (the `api` fixture) answers what the workers have done: they run too.
pytestmark = pytest.mark.usefixtures("pipeline")
EXAMPLES = int(os.environ.get("PULSE_FUZZ_EXAMPLES", 25))


def test_the_openapi_document_is_valid(api):
    spec = requests.get(f"{api}/openapi/openapi.json", timeout=10).json()
    validate(spec)
    # Every error answer is declared as a problem document.
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/health/ready":
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)


@pytest.mark.timeout(900)
def test_schemathesis_with_every_check_finds_nothing(api, tmp_path):
    report = tmp_path / "junit.xml"
    run = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{api}/openapi/openapi.json", "--checks", "all",
         "--max-examples", str(EXAMPLES), "--seed", "20261128", "--workers", "2", "--generation-database", "none",
         "--request-timeout", "30", "--no-color",
         # The run's development key (every scope): schemathesis also sends each secured operation
         # without it (its ignored_auth check) and expects the 401 the document declares.
         "--header", f"Authorization: Bearer {os.environ['PULSE_API_KEY']}",
         "--report", "junit", "--report-junit-path", str(report)],
        cwd=ROOT, env={**os.environ, **TEST_ENV, "SCHEMATHESIS_HOOKS": "scripts.schemathesis_hooks"},
        capture_output=True, text=True, timeout=850,
    )
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    assert Path(report).exists()
    # The fits and validations it asked for are jobs the analytics worker runs after the answers:
    # let them finish here, so that no later test waits behind them.
    from sqlalchemy import text

    from shared.infra.db import session_scope

    def jobs_finished():
        with session_scope() as session:
            return not session.scalar(text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"))

    wait_for(jobs_finished, timeout=600, interval=1.0, what="the fuzzer's fit and validation jobs to finish")
    print(run.stdout[run.stdout.rfind("SUMMARY"):])  # shown with -s or on -rP: cases, phases, checks
