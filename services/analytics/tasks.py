"""Analytics tasks: rescore the users whose events changed; refit the population models."""
from datetime import UTC, date, datetime

from pymongo import UpdateOne
from sqlalchemy import select, text

from services.analytics.main import app
from services.analytics.profiles import compute_profiles, fit_population
from shared import profile_cache, rescore
from shared.db import session_scope
from shared.logging import get_logger
from shared.models import User
from shared.mongo import PROFILES, get_database
from shared.retry import RETRY_POLICY
from shared.topology import COMPUTE_PROFILES, FIT_MODELS

log = get_logger("pulse.analytics")
RESCORE_CHUNK = 500


def store_profiles(db, session, profiles: dict[int, dict]) -> None:
    """Profiles to MongoDB, engagement back to users.profile_score (one statement each)."""
    if not profiles:
        return
    db[PROFILES].bulk_write(
        [
            UpdateOne(
                {"user_id": user_id},
                {"$set": {**{k: v for k, v in profile.items() if k != "user"},
                          "computed_at": datetime.fromisoformat(profile["computed_at"])}},
                upsert=True,
            )
            for user_id, profile in profiles.items()
        ],
        ordered=False,
    )
    session.execute(
        text(
            "UPDATE users SET profile_score = v.score FROM "
            "(SELECT unnest(CAST(:ids AS integer[])) AS id, unnest(CAST(:scores AS float8[])) AS score) AS v "
            "WHERE users.id = v.id"
        ),
        {"ids": list(profiles), "scores": [p["engagement"] for p in profiles.values()]},
    )


def rescore_users(user_ids: list[int]) -> int:
    db = get_database()
    # Versions first: if events arrive while we compute, our result is written under a version
    # that is already superseded (or not at all), so it can never be served as fresh.
    versions = profile_cache.current_versions(user_ids)
    with session_scope() as session:
        profiles = compute_profiles(db, session, user_ids)
        store_profiles(db, session, profiles)
    for user_id, profile in profiles.items():
        profile_cache.write(user_id, versions[user_id], profile)
    return len(profiles)


@app.task(name=COMPUTE_PROFILES, **RETRY_POLICY)
def compute_profiles_task(user_ids: list[int] | None = None) -> dict:
    """Rescore the given users, or (without ids) drain the users whose events changed."""
    if user_ids is not None:
        count = rescore_users(user_ids)
        log.info("profiles_computed", users=count)
        return {"profiles": count}
    total = 0
    remaining = rescore.pending_count()  # see shared.rescore: more users arriving go to the next drain
    while remaining > 0 and (batch := rescore.take(min(RESCORE_CHUNK, remaining))):
        remaining -= len(batch)
        try:
            total += rescore_users(batch)
        except Exception:
            rescore.put_back(batch)
            raise
    rescore.schedule_if_pending(lambda delay: app.send_task(COMPUTE_PROFILES, countdown=delay))
    log.info("profiles_rescored", users=total)
    return {"profiles": total}


@app.task(name=FIT_MODELS, ignore_result=False, **RETRY_POLICY)
def fit_models_task(as_of: str | None = None) -> dict:
    day = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    db = get_database()
    model = fit_population(db, day)
    # Profiles carry model outputs: rescore everyone against the new version.
    with session_scope() as session:
        user_ids = session.scalars(select(User.id).order_by(User.id)).all()
    for start in range(0, len(user_ids), RESCORE_CHUNK):
        app.send_task(COMPUTE_PROFILES, kwargs={"user_ids": user_ids[start : start + RESCORE_CHUNK]})
    log.info("models_fitted", version=model["version"], as_of=model["as_of"], customers=model["n_customers"])
    model["fitted_at"] = model["fitted_at"].isoformat()
    return model
