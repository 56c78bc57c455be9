"""Promises (docs/api.md, the fit and validation jobs): `POST /api/analytics/models/fit` and
`POST /api/analytics/models/validate` answer 202 with `Location: /api/analytics/jobs/<id>` at once; bad
input is a 422 naming the field, never a job; `GET` of the Location answers the job (`queued`,
`running`, `done` with its result, or `failed` with the reason and the field), and 404 for any id that
names no job; a population the models cannot be fitted on is a failed job that says why, not a 500;
a job is written with the message that runs it (the outbox) and run once, whatever redelivers its
task; the read scope can poll but not start a job.

The attacks, over HTTP against the real stack (API in this process, worker processes, Postgres,
RabbitMQ): impossible and malformed dates, a holdout before or on the calibration end, bodies that
are not the object, made-up, malformed and foreign ids (another task's id, a key id, a path trick),
a population of one-time buyers, the same task sent again after its job finished, and keys and the
dashboard cookie without the admin scope.
"""
import uuid

import pytest
import requests
from sqlalchemy import func, select, text

from shared.contracts.tables import CustomerSummary, OutboxMessage, User
from shared.contracts.topology import COMPUTE_PROFILES, FIT_MODELS, VALIDATE_MODELS
from shared.infra import api_keys
from shared.infra.db import session_scope
from tests.fixtures import PULSE, ROOT, wait_for
from tests.helpers import serve, tasks_held

pytestmark = pytest.mark.usefixtures("pipeline")
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api(app):
    with serve(app) as url:
        yield url


def key(*scopes: str) -> dict[str, str]:
    with session_scope() as session:
        _, secret = api_keys.create(session, list(scopes), name="adversarial-jobs")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def admin():
    return key("admin", "read")


def poll(api: str, headers: dict, location: str, timeout: float = 180) -> tuple[dict, list[str]]:
    """The job once finished, and every status seen on the way."""
    seen: list[str] = []

    def finished():
        job = requests.get(api + location, headers=headers, timeout=10).json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        return job["status"] in ("done", "failed") and job

    return wait_for(finished, timeout=timeout, interval=0.1, what=f"{location} to finish"), seen


@pytest.fixture(scope="module")
def one_time_buyers(tmp_path_factory, app):
    """Customers who each bought once, in March 1985 (no other test's purchases are that old);
    erased when the module ends, so that no later validation counts them."""
    import subprocess

    from tests.fixtures import keyed_client

    path = tmp_path_factory.mktemp("one-time") / "one_time.csv"
    tag = uuid.uuid4().hex[:6]
    path.write_text("customer_id,date,quantity,amount\n" + "".join(
        f"{n},1985-03-0{1 + n % 5},1,{10 + n}.50\n" for n in range(12)))
    done = subprocess.run([PULSE, "backfill", str(path), "--quiet", "--country", "EE",
                           "--city", "Tartu", "--username-prefix", f"once{tag}_", "--category", "music"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with session_scope() as session:
        ids = list(session.scalars(select(User.id).where(User.username.like(f"once{tag}_%"))))
    assert len(ids) == 12
    yield ids
    client = keyed_client(app)
    for user_id in ids:
        assert client.delete(f"/api/users/{user_id}").status_code == 202

    def forgotten():
        with session_scope() as session:
            return not session.scalar(select(func.count()).select_from(CustomerSummary)
                                      .where(CustomerSummary.user_id.in_(ids)))

    wait_for(forgotten, timeout=120, what="the one-time buyers erased")


def analytics_idle(celery) -> bool:
    """No message waiting in the analytics queue and none held by a worker."""
    with celery.connection_for_read() as conn:
        ready = conn.default_channel.queue_declare("pulse.analytics", passive=True).message_count
    return ready == 0 and not tasks_held(celery.control)


BAD_DATES = [
    ({"calibration_end": "1997-02-30", "holdout_end": "1998-06-30"}, "calibration_end"),
    ({"calibration_end": "yesterday", "holdout_end": "1998-06-30"}, "calibration_end"),
    ({"calibration_end": 19970930, "holdout_end": "1998-06-30"}, "calibration_end"),  # not seconds since 1970
    ({"calibration_end": "", "holdout_end": "1998-06-30"}, "calibration_end"),
    ({"calibration_end": None, "holdout_end": "1998-06-30"}, "calibration_end"),
    ({"holdout_end": "1998-06-30"}, "calibration_end"),
    ({"calibration_end": "1997-09-30", "holdout_end": "1998-13-01"}, "holdout_end"),
    ({"calibration_end": "1997-09-30"}, "holdout_end"),
    ({"calibration_end": "1997-09-30", "holdout_end": "1997-09-30"}, "holdout_end"),  # an empty holdout
    ({"calibration_end": "1998-06-30", "holdout_end": "1997-09-30"}, "holdout_end"),  # before calibration
    ({"calibration_end": "1997-09-30", "holdout_end": "2999-01-01"}, "holdout_end"),  # not observed yet
    ({"calibration_end": "1997-09-30", "holdout_end": "1998-06-30", "models": ["all"]}, "models"),
]


@pytest.mark.parametrize("body,field", BAD_DATES)
def test_a_bad_validation_request_is_a_422_naming_the_field_and_no_job(api, admin, body, field):
    with session_scope() as session:
        before = session.execute(text("SELECT count(*) FROM jobs")).scalar()
    response = requests.post(f"{api}/api/analytics/models/validate", json=body, headers=admin, timeout=10)
    assert response.status_code == 422 and response.headers["Content-Type"].startswith(PROBLEM), response.text
    assert field in [e["field"] for e in response.json()["errors"]], response.json()
    assert "Location" not in response.headers
    with session_scope() as session:
        assert session.execute(text("SELECT count(*) FROM jobs")).scalar() == before


@pytest.mark.parametrize("raw", ["null", "[]", "3", '"1997-09-30"', "{"])
def test_a_body_that_is_not_the_object_is_refused(api, admin, raw):
    for path in ("/api/analytics/models/validate", "/api/analytics/models/fit"):
        response = requests.post(api + path, data=raw, headers={**admin, "Content-Type": "application/json"},
                                 timeout=10)
        assert response.status_code in (400, 422) and response.headers["Content-Type"].startswith(PROBLEM), (path, raw)


def test_ids_that_name_no_job_are_404_problems(api, admin, client):
    # Another task's id (a rescoring the broker took), a key's id, a model version, made-up ids,
    # path tricks: none is a job.
    other_task = client.application.extensions["celery"].send_task(COMPUTE_PROFILES, kwargs={"user_ids": []}).id
    with session_scope() as session:
        key_id, _ = api_keys.create(session, ["read"], name="not-a-job")
        key_id = key_id.id
    for job_id in (other_task, key_id, "1", str(uuid.uuid4()), uuid.uuid4().hex.upper(), "not-a-uuid",
                   "1' OR '1'='1", "%00", "..%2F..%2Fhealth", "x" * 5000, "\u00e9\u00e9"):
        response = requests.get(f"{api}/api/analytics/jobs/{job_id}", headers=admin, timeout=10)
        assert response.status_code == 404, (job_id[:40], response.status_code, response.text[:200])
        assert response.headers["Content-Type"].startswith(PROBLEM)
    # A trailing segment or a missing id is no route at all.
    assert requests.get(f"{api}/api/analytics/jobs/", headers=admin, timeout=10).status_code == 404


def test_each_job_says_its_kind_and_a_redelivered_task_runs_nothing_again(api, admin, client, one_time_buyers):
    fit = requests.post(f"{api}/api/analytics/models/fit", json={}, headers=admin, timeout=10)
    validation = requests.post(f"{api}/api/analytics/models/validate", headers=admin, timeout=10,
                               json={"calibration_end": "1985-03-31", "holdout_end": "1985-06-30"})
    assert fit.status_code == validation.status_code == 202
    assert fit.json()["id"] != validation.json()["id"]
    fit_job, fit_seen = poll(api, admin, fit.headers["Location"])
    validation_job, validation_seen = poll(api, admin, validation.headers["Location"])
    # Each job's task went out through the outbox, written with the job (one transaction), and was
    # published once: under the job's id, which is the task's id.
    with session_scope() as session:
        rows = {str(row.id): row for row in session.scalars(select(OutboxMessage).where(
            OutboxMessage.id.in_([uuid.UUID(fit_job["id"]), uuid.UUID(validation_job["id"])])))}
        assert {job_id: (row.task_name, row.payload, row.published_at is not None) for job_id, row in rows.items()} == {
            fit_job["id"]: (FIT_MODELS, {"job_id": fit_job["id"]}, True),
            validation_job["id"]: (VALIDATE_MODELS, {"job_id": validation_job["id"]}, True)}
    assert fit_job["kind"] == "fit" and validation_job["kind"] == "validation"
    assert fit_job["params"] != validation_job["params"]
    # Statuses only move forward: queued, running, then done or failed (polling may miss some).
    order = ["queued", "running", "done", "failed"]
    for seen in (fit_seen, validation_seen):
        assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen), seen
    # The same task sent again, as a redelivery would: the finished job is left as it is.
    celery = client.application.extensions["celery"]
    celery.send_task(VALIDATE_MODELS, kwargs={"job_id": validation_job["id"]})
    # ... and a task for a job that does not exist does nothing either (and fails nothing).
    celery.send_task(VALIDATE_MODELS, kwargs={"job_id": str(uuid.uuid4())})
    wait_for(lambda: analytics_idle(celery), timeout=60, what="the analytics worker past the resent tasks")
    again = requests.get(api + validation.headers["Location"], headers=admin, timeout=10).json()
    assert again == validation_job


def test_a_population_of_one_time_buyers_is_a_failed_job_with_the_reason(api, admin, one_time_buyers):
    # Up to the end of March 1985 every customer made one purchase: no model is identified.
    validation = requests.post(f"{api}/api/analytics/models/validate", headers=admin, timeout=10,
                               json={"calibration_end": "1985-03-31", "holdout_end": "1985-06-30"})
    job, _ = poll(api, admin, validation.headers["Location"])
    assert job["status"] == "failed" and job["result"] is None, job
    assert job["error"]["field"] == "calibration_end"
    assert "repeat" in job["error"]["detail"] and "bgnbd" in job["error"]["detail"]
    fit = requests.post(f"{api}/api/analytics/models/fit", headers=admin, timeout=10, json={"as_of": "1985-03-31"})
    job, _ = poll(api, admin, fit.headers["Location"])
    assert job["status"] == "failed" and job["error"]["field"] == "as_of" and "repeat" in job["error"]["detail"]
    # A calibration end before anyone bought: too few customers, said as such.
    early = requests.post(f"{api}/api/analytics/models/validate", headers=admin, timeout=10,
                          json={"calibration_end": "1975-01-01", "holdout_end": "1976-01-01"})
    job, _ = poll(api, admin, early.headers["Location"])
    assert job["status"] == "failed" and "customers" in job["error"]["detail"]


def test_only_the_admin_scope_starts_a_job_and_the_read_scope_polls_it(api, admin, one_time_buyers):
    body = {"calibration_end": "1985-03-31", "holdout_end": "1985-06-30"}
    started = requests.post(f"{api}/api/analytics/models/validate", json=body, headers=admin, timeout=10)
    location = started.headers["Location"]
    reader, ingester = key("read"), key("ingest")
    for path, payload in (("/api/analytics/models/validate", body), ("/api/analytics/models/fit", {})):
        assert requests.post(api + path, json=payload, headers=reader, timeout=10).status_code == 403
        assert requests.post(api + path, json=payload, headers=ingester, timeout=10).status_code == 403
        assert requests.post(api + path, json=payload, timeout=10).status_code == 401
    assert requests.get(api + location, headers=reader, timeout=10).status_code == 200
    assert requests.get(api + location, headers=ingester, timeout=10).status_code == 403
    assert requests.get(api + location, timeout=10).status_code == 401
    # The dashboard's session reads (it may poll) but never starts a job, whatever key logged in.
    login = requests.post(f"{api}/dashboard/login", data={"key": admin["Authorization"].split()[1]},
                          allow_redirects=False, timeout=10)
    assert login.status_code == 303, login.text
    cookie = {"Cookie": f"pulse_session={login.cookies['pulse_session']}"}
    assert requests.get(api + location, headers=cookie, timeout=10).status_code == 200
    posted = requests.post(f"{api}/api/analytics/models/validate", json=body, headers=cookie, timeout=10)
    assert posted.status_code == 401
