"""Analytics tasks: rescore users in batches; refit the population model and rescore everyone.

Every rescoring is a batch of at most RESCORE_CHUNK users computed together (a few indexed reads
for the whole batch, vectorised scoring, one bulk write per store), and the batches of a large
rescoring are separate tasks, so every analytics worker process that runs takes a share.
"""
from datetime import date, datetime
from typing import Any

from pymongo import ReplaceOne
from sqlalchemy import func, select, text

from services.analytics import customer_stats, validation
from services.analytics.fitting import fit_population, last_complete_day
from services.analytics.main import app
from shared.analytics import fitted_models, insights
from shared.analytics.insights.cohorts import UnknownCohort
from shared.analytics.profiles import compute_profiles
from shared.contracts.settings import get_settings
from shared.contracts.tables import User
from shared.contracts.topology import (
    COMPUTE_PROFILES,
    CUSTOMER_STATS,
    FIT_MODELS,
    RUN_INSIGHT,
    SWEEP_RESCORING,
    VALIDATE_MODELS,
)
from shared.infra.db import session_scope
from shared.infra.logging import get_logger
from shared.infra.mongo import PROFILES, get_database
from shared.infra.retry import RETRY_POLICY, TRANSIENT_ERRORS
from shared.pipeline import data_version, erasure, jobs, profile_cache, rescore

log = get_logger("pulse.analytics")
RESCORE_CHUNK = 500


def profile_document(profile: dict) -> dict[str, Any]:
    """The MongoDB profile document: the profile, with the user's identity flattened the way the
    worker writes it at signup (username, e-mail, name, city, country)."""
    user = profile["user"]
    return {
        "_id": profile["user_id"],
        **{k: v for k, v in profile.items() if k != "user"},
        "username": user["username"],
        "email": user["email"],
        "full_name": user["full_name"],
        "city": user["address"]["city"],
        "country_code": user["address"]["country"]["code"],
        "created_at": datetime.fromisoformat(user["created_at"]),
        "computed_at": datetime.fromisoformat(profile["computed_at"]),
    }


def store_profiles(db, session, profiles: dict[int, dict[str, Any]]) -> None:
    """Profiles to MongoDB, engagement and segment back to users (one statement each).
    Whole documents are replaced by key (shared.infra.mongo: profiles are keyed by user id): on the dev
    server that costs two thirds of a $set on a looked-up field."""
    if not profiles:
        return
    db[PROFILES].bulk_write(
        [ReplaceOne({"_id": user_id}, profile_document(profile), upsert=True)
         for user_id, profile in profiles.items()],
        ordered=False,
    )
    # Locked in id order first: two rescorings of overlapping users (a drain and a refit's
    # chunk) then queue behind each other instead of deadlocking. NO KEY UPDATE, as the UPDATE
    # itself takes: it does not block the foreign-key checks of the worker's inserts.
    session.execute(text("SELECT id FROM users WHERE id = ANY(CAST(:ids AS integer[])) ORDER BY id FOR NO KEY UPDATE"),
                    {"ids": sorted(profiles)})
    session.execute(
        text(
            "UPDATE users SET profile_score = v.score, segment = v.segment FROM "
            "unnest(CAST(:ids AS integer[]), CAST(:scores AS float8[]), CAST(:segments AS text[])) "
            "AS v(id, score, segment) WHERE users.id = v.id "
            # profile_score is indexed, so every update writes a new row version into each index of
            # users: a refit that changes no score must not rewrite (and bloat) the whole table.
            "AND (users.profile_score IS DISTINCT FROM v.score OR users.segment IS DISTINCT FROM v.segment)"
        ),
        {"ids": list(profiles), "scores": [p["engagement"] for p in profiles.values()],
         "segments": [p["segment"] for p in profiles.values()]},
    )


def rescore_users(user_ids: list[int]) -> int:
    db = get_database()
    with session_scope() as session:
        # Versions first: if events arrive while we compute, our result is written under a
        # version that is already superseded, so it can never be served as fresh.
        versions = profile_cache.versions(session, user_ids)
        # Read before the data: a change committed after this read keeps its user pending.
        seen = rescore.changes_seen(session, user_ids)
        profiles = compute_profiles(db, session, user_ids)
        store_profiles(db, session, profiles)
        rescore.clear_seen(session, seen)
    if profiles:
        # Committed: breakdowns by segment and saved cohorts by segment or RFM code read these. Any
        # rewrite, not only a changed segment: the RFM code lives in the profile document alone (a
        # rescoring after a refit or with time passing changes it with the segment unchanged).
        data_version.changed("profiles")
    profile_cache.write_many({user_id: (versions.get(user_id), profile) for user_id, profile in profiles.items()})
    with session_scope() as session:
        # After every write: whoever was erased meanwhile is forgotten again (shared.pipeline.erasure). All
        # the requested users, not only those computed: a retry after a failed write computes
        # nothing for an erased user, yet the failed attempt may have stored their profile.
        erasure.forget_missing(db, session, user_ids)
    rescore.count_rescored(len(profiles))
    return len(profiles)


def _schedule_drain(delay: float) -> None:
    app.send_task(COMPUTE_PROFILES, countdown=delay)


def _drain_chunk(drain: str) -> int:
    batch = rescore.take(drain, RESCORE_CHUNK)
    if not batch:
        return 0
    try:
        return rescore_users(batch)
    except Exception:
        rescore.put_back(batch, _schedule_drain)
        raise


@app.task(name=COMPUTE_PROFILES, **RETRY_POLICY)
def compute_profiles_task(user_ids: list[int] | None = None, id_range: list[int] | None = None,
                          drain: str | None = None) -> dict[str, Any]:
    """Rescore the given users, the users with ids in `id_range` ([first, last]), a chunk of a
    running drain (`drain`), or (with none of them) start a drain of the users whose events
    changed (shared.pipeline.rescore): one chunk here, one task per further chunk, which any analytics
    worker process may run."""
    if user_ids is not None:
        count = rescore_users(user_ids)
        log.info("profiles_computed", users=count)
        return {"profiles": count}
    if id_range is not None:
        with session_scope() as session:
            ids = list(session.scalars(
                select(User.id).where(User.id.between(id_range[0], id_range[1])).order_by(User.id)))
        count = rescore_users(ids) if ids else 0
        log.info("profiles_computed", users=count, first_id=id_range[0], last_id=id_range[1])
        return {"profiles": count}
    if drain is None:
        drain, pending = rescore.start_drain()
        if drain is None:
            return {"profiles": 0}
        for _ in range(rescore.chunk_tasks(pending, RESCORE_CHUNK)):
            app.send_task(COMPUTE_PROFILES, kwargs={"drain": drain})
    count = _drain_chunk(drain)
    log.info("profiles_rescored", users=count)
    return {"profiles": count}


@app.task(name=SWEEP_RESCORING, **RETRY_POLICY)
def sweep_rescoring_task() -> dict[str, Any]:
    """Every minute (beat): users whose rescoring Redis or a killed worker lost (shared.pipeline.rescore)."""
    with session_scope() as session:
        swept = rescore.sweep(session, _schedule_drain, older_than_seconds=2 * get_settings().rescore_sweep_seconds)
    if swept:
        log.info("rescoring_swept", users=swept)
    return {"swept": swept}


def rescore_everyone() -> int:
    """Queue a rescoring of every user in chunks of consecutive ids (one task each)."""
    with session_scope() as session:
        first, last = session.execute(select(func.min(User.id), func.max(User.id))).one()
    if first is None:
        return 0
    tasks = 0
    for start in range(first, last + 1, RESCORE_CHUNK):
        app.send_task(COMPUTE_PROFILES, kwargs={"id_range": [start, min(start + RESCORE_CHUNK - 1, last)]})
        tasks += 1
    return tasks


class JobTask(app.Task):
    """A task that runs a job (shared.pipeline.jobs): when it fails for good (its retries spent, or an error
    no retry helps), the job is marked failed with the reason, so its client is told instead of
    polling a job that stays running."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        job_id = jobs.parse_id((kwargs or {}).get("job_id"))
        if job_id is None:
            return
        try:
            with session_scope() as session:
                jobs.fail(session, job_id, f"the analytics worker failed: {type(exc).__name__}: {exc}")
        except Exception as error:  # noqa: BLE001 - Postgres down: the job stays running, the task is dead-lettered
            log.warning("job_not_marked_failed", job_id=str(job_id), error=type(error).__name__)


def _start_job(job_id: str | None):
    """The job this task runs, now running; None when it is finished already (a redelivery)."""
    with session_scope() as session:
        job = jobs.start(session, jobs.parse_id(job_id))
        return None if job is None else dict(job.params)


@app.task(name=FIT_MODELS, base=JobTask, ignore_result=True, **RETRY_POLICY)
def fit_models_task(as_of: str | None = None, job_id: str | None = None) -> dict[str, Any]:
    """A fit asked for through the API (`job_id`: its job, `as_of` in its params), or beat's daily
    refit (no arguments): that one fits up to the last complete day, and first scores the model in
    use against what its customers did since it was fitted (the rolling holdout)."""
    if job_id is not None:
        params = _start_job(job_id)
        if params is None:
            return {"skipped": "job finished already"}
        as_of = params.get("as_of") or as_of
    day = date.fromisoformat(as_of) if as_of else last_complete_day()
    db = get_database()
    if job_id is None:
        try:
            with session_scope() as session:
                validation.rolling_check(db, session, day)
        except TRANSIENT_ERRORS:
            raise  # a store is down: the whole refit is retried
        except Exception as exc:  # noqa: BLE001 - the check is a report on the old model: it never blocks the refit
            log.exception("rolling_holdout_failed", reason=f"{type(exc).__name__}: {exc}")
    try:
        with session_scope() as session:
            model = fit_population(db, session, day)
    except ValueError as exc:
        # Too few customers, or a population the scoring model cannot be fitted on, is an answer,
        # not a failure: the job says why, the task is neither retried nor dead-lettered.
        log.info("models_not_fitted", as_of=day.isoformat(), reason=str(exc))
        if job_id is not None:
            with session_scope() as session:
                jobs.fail(session, jobs.parse_id(job_id), f"The models could not be fitted: {exc}", "as_of")
        return {"error": str(exc)}
    # Profiles carry model outputs: rescore everyone against the new version, spread over workers.
    model["rescoring_tasks"] = rescore_everyone()
    app.send_task(CUSTOMER_STATS)  # the dashboard's distributions follow the new model at once
    model["fitted_at"] = model["fitted_at"].isoformat()
    answer = fitted_models.describe(model)
    if job_id is not None:
        with session_scope() as session:
            jobs.finish(session, jobs.parse_id(job_id), answer)
    return {"version": answer["version"]}


@app.task(name=VALIDATE_MODELS, base=JobTask, ignore_result=True, **RETRY_POLICY)
def validate_models_task(job_id: str) -> dict[str, Any]:
    """A calibration/holdout validation asked for through the API (services.analytics.validation)."""
    params = _start_job(job_id)
    if params is None:
        return {"skipped": "job finished already"}
    calibration_end = date.fromisoformat(params["calibration_end"])
    holdout_end = date.fromisoformat(params["holdout_end"])
    try:
        with session_scope() as session:
            result = validation.validate(session, calibration_end, holdout_end)
    except validation.ValidationRefused as exc:
        with session_scope() as session:
            jobs.fail(session, jobs.parse_id(job_id), f"The models could not be validated: {exc}", exc.field)
        return {"error": str(exc)}
    with session_scope() as session:
        jobs.finish(session, jobs.parse_id(job_id), result)
    log.info("models_validated", job_id=job_id, calibration_end=params["calibration_end"],
             holdout_end=params["holdout_end"], customers=result["holdout"]["customers"],
             total_ms=result["timings_ms"]["total"])
    return {"customers": result["holdout"]["customers"]}


@app.task(name=RUN_INSIGHT, base=JobTask, ignore_result=True, **RETRY_POLICY)
def run_insight_task(job_id: str) -> dict[str, Any]:
    """A funnel, retention or lifecycle query run as a job (shared.analytics.insights): without the
    API's time limit; its answer is the job's result and is cached as the API's would be."""
    with session_scope() as session:
        job = jobs.start(session, jobs.parse_id(job_id))
        if job is None:
            return {"skipped": "job finished already"}
        kind, params = job.kind, dict(job.params)
    try:
        with session_scope() as session:
            result, cache = insights.answer(session, kind, params)
    except UnknownCohort as exc:
        # Deleted between the request and the job: an answer to the client, not a failure to retry.
        with session_scope() as session:
            jobs.fail(session, jobs.parse_id(job_id), str(exc), exc.field)
        return {"error": str(exc)}
    with session_scope() as session:
        jobs.finish(session, jobs.parse_id(job_id), result)
    log.info("insight_computed", job_id=job_id, kind=kind, cache=cache)
    return {"kind": kind}


@app.task(name=CUSTOMER_STATS, **RETRY_POLICY)
def customer_stats_task() -> dict[str, Any]:
    """Every CUSTOMER_STATS_SECONDS (beat) and after each fit: the dashboard's customer distributions."""
    db = get_database()
    with session_scope() as session:
        doc = customer_stats.compute(customer_stats.read_summaries(session), fitted_models.current.get(db))
    customer_stats.store(db, doc)
    log.info("customer_stats_computed", customers=doc["customers"], model_version=doc["model_version"],
             compute_ms=doc["compute_ms"])
    return {"customers": doc["customers"]}
