"""Jobs: population-wide work asked for through the API (a fit, a validation, a long insight query), run in
the background.

The API writes a `jobs` row (queued) and sends the task that runs it, and answers 202 with
`Location: /api/analytics/jobs/<id>` at once: no web thread waits for a result. The task moves the
row to running, then to done with its result or to failed with the reason (a reason a client can
act on, such as "no repeat buyers", names the request field it comes from). Everything is in
Postgres, so the state is durable and exact whichever worker runs the job, and a redelivered task
finds a finished job finished and leaves it alone.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.contracts.tables import Job
from shared.infra.db import rowcount

FIT = "fit"
VALIDATION = "validation"
# Insight queries that ran past the API's inline time limit (shared.analytics.insights).
FUNNEL, RETENTION, LIFECYCLE = "funnel", "retention", "lifecycle"
KINDS = (FIT, VALIDATION, FUNNEL, RETENTION, LIFECYCLE)
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINISHED = (DONE, FAILED)


def create(session: Session, kind: str, params: dict[str, Any]) -> uuid.UUID:
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    job = Job(id=uuid.uuid4(), kind=kind, status=QUEUED, params=params, attempts=0)
    session.add(job)
    session.flush()
    return job.id


def parse_id(text: str | None) -> uuid.UUID | None:
    """A job id from a URL: None for anything that is not a UUID (it cannot name a job)."""
    try:
        return uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return None


def get(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.get(Job, job_id)


def start(session: Session, job_id: uuid.UUID) -> Job | None:
    """Mark the job running and return it, or None when it is finished already (a redelivered task)
    or does not exist."""
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
    if job is None or job.status in FINISHED:
        return None
    job.status = RUNNING
    job.started_at = datetime.now(UTC)
    job.attempts = (job.attempts or 0) + 1
    session.flush()
    return job


def _finish(session: Session, job_id: uuid.UUID, **values: Any) -> bool:
    # Only an unfinished job changes: a job is done or failed once, whatever a late retry does.
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.not_in(FINISHED))
        .values(finished_at=datetime.now(UTC), **values))
    return rowcount(result) == 1


def finish(session: Session, job_id: uuid.UUID, result: dict[str, Any]) -> bool:
    return _finish(session, job_id, status=DONE, result=result)


def fail(session: Session, job_id: uuid.UUID, reason: str, field: str | None = None) -> bool:
    return _finish(session, job_id, status=FAILED, error=reason[:2000], error_field=field)


def latest_done(session: Session, kind: str, limit: int = 1) -> list[Job]:
    """The newest finished (done) jobs of a kind, newest first."""
    return list(session.scalars(
        select(Job).where(Job.kind == kind, Job.status == DONE).order_by(Job.finished_at.desc()).limit(limit)))


def location(job_id: uuid.UUID) -> str:
    return f"/api/analytics/jobs/{job_id}"


def describe(job: Job) -> dict[str, Any]:
    """The job as GET /api/analytics/jobs/<id> answers it."""
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {
        "id": str(job.id),
        "kind": job.kind,
        "status": job.status,
        "params": job.params,
        "submitted_at": iso(job.submitted_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "attempts": job.attempts or 0,
        "result": job.result if job.status == DONE else None,
        "error": {"detail": job.error, "field": job.error_field} if job.status == FAILED else None,
    }
