"""A user's analytics profile: the guide's rules, the population models and recommendations.

Computed for a batch of users at once from bulk reads (Postgres for the users and their daily
activity counters, MongoDB for purchases), vectorised with numpy. The analytics worker calls it
after events arrive; the API calls the same function on a cache miss, so both always agree.
"""
from datetime import UTC, date, datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.analytics import models_store
from services.analytics.models import (
    conditional_expected_average_spend,
    conditional_expected_purchases,
    customer_lifetime_value,
    engagement_score,
    fit_bgnbd,
    fit_gamma_gamma,
    probability_alive,
    recommend,
    rfm_scores,
    churn_risk,
    segment,
    summarise_purchases,
)
from services.analytics.purchases import PurchaseLog, load_purchases, purchases_for_scoring
from shared import activity as activity_counters
from shared.models import User
from shared.settings import get_settings
from shared.user_views import user_summary, with_address

PREDICTION_DAYS = 90
RECOMMENDATIONS = 5


def load_users(session: Session, user_ids: list[int]) -> dict[int, User]:
    rows = session.scalars(select(User).options(with_address()).where(User.id.in_(user_ids))).all()
    return {user.id: user for user in rows}


def _days_between(later: datetime, earlier: np.datetime64) -> int:
    delta = np.datetime64(later.astimezone(UTC).replace(tzinfo=None), "ms") - earlier
    return int(delta // np.timedelta64(1, "D"))


def compute_profiles(db, session: Session, user_ids: list[int], now: datetime | None = None) -> dict[int, dict]:
    """Profiles of the given users that exist in Postgres, keyed by user id."""
    now = now or datetime.now(UTC)
    users = load_users(session, user_ids)
    ids = sorted(users)
    if not ids:
        return {}
    log = purchases_for_scoring(db, ids).until(now)
    summary = summarise_purchases(log.user_id, log.timestamp, log.amount, now.date())
    rfm = rfm_scores(summary.days_since_last_purchase, summary.frequency + 1, summary.total_spent)
    recommendations = recommend(ids, log.user_id, log.category, k=RECOMMENDATIONS)
    activity = activity_counters.load(session, ids, now)
    model = models_store.latest(db)
    scored = _score_with_model(model, summary) if model else None
    position = {int(u): i for i, u in enumerate(summary.user_id)}

    profiles = {}
    for user_id in ids:
        i = position.get(user_id)
        is_customer = i is not None
        spent = float(summary.total_spent[i]) if is_customer else 0.0
        # The guide's convention: a user without purchases counts "now" as the last purchase.
        days = _days_between(now, summary.last_purchase[i]) if is_customer else 0
        act = activity.get(user_id)
        days_active = (now - act.last_activity_at).total_seconds() / 86400 if act and act.last_activity_at else None
        engagement = engagement_score(
            days_active,
            act.events_last_30_days if act else 0,
            int(summary.n_purchases[i]) if is_customer else 0,
            spent,
        )
        predictions = None
        if scored is not None and is_customer:
            predictions = {
                name: round(float(values[i]), 4) if np.isfinite(values[i]) else None
                for name, values in scored.items()
            }
        profiles[user_id] = {
            "user_id": user_id,
            # The engagement score is the user's profile score (written back to Postgres by the
            # analytics worker); show it as such rather than the value stored before this run.
            "user": {**user_summary(users[user_id]), "profile_score": round(engagement, 2)},
            "segment": segment(days, spent),
            "engagement": round(engagement, 2),
            "churn_risk": round(churn_risk(days), 1),
            "predicted_ltv": predictions["clv"] if predictions else None,
            "p_alive": predictions["p_alive"] if predictions else None,
            "expected_purchases_90d": predictions["expected_purchases_90d"] if predictions else None,
            "expected_average_spend": predictions["expected_average_spend"] if predictions else None,
            "rfm": {
                "recency": int(rfm.recency[i]),
                "frequency": int(rfm.frequency[i]),
                "monetary": int(rfm.monetary[i]),
                "code": str(rfm.code[i]),
            }
            if is_customer
            else None,
            "totals": {
                "total_spent": round(spent, 2),
                "purchases": int(summary.n_purchases[i]) if is_customer else 0,
                "repeat_purchase_days": int(summary.frequency[i]) if is_customer else 0,
                "events": act.events if act else 0,
                "events_last_30_days": act.events_last_30_days if act else 0,
                "days_since_last_purchase": days if is_customer else None,
                "last_purchase_at": _iso(summary.last_purchase[i]) if is_customer else None,
                "last_activity_at": act.last_activity_at.isoformat() if act and act.last_activity_at else None,
            },
            "recommendations": [str(item) for item in recommendations.get(user_id, [])],
            "model_version": model["version"] if model else None,
            "computed_at": now.isoformat(),
        }
    return profiles


def _iso(value: np.datetime64) -> str:
    return np.datetime_as_string(value.astype("datetime64[ms]"), unit="s") + "Z"


def _score_with_model(model: dict, summary) -> dict[str, np.ndarray]:
    settings = get_settings()
    bgnbd, gg = models_store.params(model)
    x, t_x, T, m = summary.frequency, summary.recency, summary.T, summary.monetary_value
    scores = {
        "p_alive": probability_alive(bgnbd, x, t_x, T),
        "expected_purchases_90d": conditional_expected_purchases(bgnbd, PREDICTION_DAYS / 7, x, t_x, T),
    }
    if gg is not None:
        scores["expected_average_spend"] = conditional_expected_average_spend(gg, x, m)
        scores["clv"] = customer_lifetime_value(
            bgnbd, gg, x, t_x, T, m,
            horizon_months=settings.clv_horizon_months,
            monthly_discount_rate=settings.clv_monthly_discount_rate,
        )
    else:
        scores["expected_average_spend"] = np.full(len(x), np.nan)
        scores["clv"] = np.full(len(x), np.nan)
    return scores


def fit_population(db, as_of: date) -> dict:
    """Fit BG/NBD and Gamma-Gamma on every customer's purchases up to and including `as_of`."""
    log: PurchaseLog = load_purchases(db)
    summary = summarise_purchases(log.user_id, log.timestamp, log.amount, as_of)
    if len(summary) < 2:
        raise ValueError(f"need purchases of at least 2 customers up to {as_of}, found {len(summary)}")
    bgnbd = fit_bgnbd(summary.frequency, summary.recency, summary.T)
    gamma_gamma = None
    if int((summary.frequency > 0).sum()) >= 2:
        gamma_gamma = fit_gamma_gamma(summary.frequency, summary.monetary_value)
    return models_store.save(db, as_of, bgnbd, gamma_gamma)
