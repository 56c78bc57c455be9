"""A user's analytics profile: the guide's rules, the population models and recommendations.

Computed for a batch of users at once from what is kept per user (Postgres: the user with the
address, the customer summary, the categories bought, the daily activity counters) and the
current population model (MongoDB `models`, decoded once per process and version), vectorised
with numpy. Nothing read grows with the population: a profile costs the same at a thousand
customers and at ten million. The analytics worker calls it to rescore users; the API calls it
on a cache miss, so both always agree.
"""
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
from sqlalchemy.orm import Session

from shared import activity as activity_counters
from shared import summaries
from shared.analytics import model_store
from shared.analytics.model_store import Model
from shared.analytics.models import (
    churn_risk,
    conditional_expected_average_spend,
    conditional_expected_purchases,
    customer_lifetime_value,
    engagement_score,
    probability_alive,
    score_with_breakpoints,
    segment,
)
from shared.analytics.purchases import load_purchases
from shared.logging import get_logger
from shared.settings import get_settings
from shared.user_views import user_summaries

PREDICTION_DAYS = 90
RECOMMENDATIONS = 5
SLOW_PROFILE_MS = 50.0
log = get_logger("pulse.profiles")
# Milliseconds per phase of the last computation in this context (the API's request): the profile
# view sends them as a Server-Timing header, so a client sees where a miss spent its time.
LAST_PHASES: ContextVar[dict[str, float] | None] = ContextVar("pulse_profile_phases", default=None)
EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class Purchases:
    """What the profile needs about one customer's purchases up to now."""

    first_day: date
    last_day: date
    last_purchase_at: datetime
    purchase_days: int
    purchases: int
    spent: float
    first_day_spent: float
    categories: list[str]


def _from_log(db, user_ids: list[int], now: datetime) -> dict[int, Purchases]:
    """Customers with purchases stamped after `now` (timestamps may run up to a day ahead): their
    summary already counts those, a profile as of now must not. Read from their own events."""
    log = load_purchases(db, user_ids).until(now)
    found: dict[int, Purchases] = {}
    for user_id in user_ids:
        mine = log.user_id == user_id
        if not mine.any():
            continue
        stamps = log.timestamp[mine]
        amounts = log.amount[mine]
        days = stamps.astype("datetime64[D]")
        first = days.min()
        found[user_id] = Purchases(
            first_day=first.astype(date),
            last_day=days.max().astype(date),
            last_purchase_at=stamps.max().astype(datetime).replace(tzinfo=UTC),
            purchase_days=int(np.unique(days).size),
            purchases=int(mine.sum()),
            spent=float(amounts.sum()),
            first_day_spent=float(amounts[days == first].sum()),
            categories=sorted(set(log.category[mine].tolist())),
        )
    return found


def load_purchase_facts(db, session: Session, user_ids: list[int], now: datetime) -> dict[int, Purchases]:
    stored = summaries.load(session, user_ids)
    categories = summaries.load_categories(session, list(stored))
    facts = {
        user_id: Purchases(s.first_day, s.last_day, s.last_purchase_at, s.purchase_days, s.purchases, s.spent,
                           s.first_day_spent, categories.get(user_id, []))
        for user_id, s in stored.items()
        if s.last_purchase_at <= now
    }
    ahead = [user_id for user_id, s in stored.items() if s.last_purchase_at > now]
    if ahead:
        facts.update(_from_log(db, ahead, now))
    return facts


def compute_profiles(db, session: Session, user_ids: list[int], now: datetime | None = None) -> dict[int, dict]:
    """Profiles of the given users that exist in Postgres, keyed by user id."""
    # Milliseconds, as MongoDB keeps the purchase instants the days are counted against.
    now = now or datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    clock = _PhaseClock()
    users = clock("users", user_summaries, session, user_ids)
    ids = sorted(users)
    if not ids:
        return {}
    facts = clock("purchases", load_purchase_facts, db, session, ids, now)
    activity = clock("activity", activity_counters.load, session, ids, now)
    model = clock("model", model_store.current.get, db)
    customers = [u for u in ids if u in facts]
    scored = clock("scoring", _score_customers, model, [facts[u] for u in customers], now.date())
    position = {user_id: i for i, user_id in enumerate(customers)}
    recommendations = (
        clock("recommendations", model.co_purchases.recommend,
              {u: facts[u].categories if u in facts else [] for u in ids}, k=RECOMMENDATIONS)
        if model is not None and model.co_purchases is not None
        else {}
    )
    clock.report(len(ids))

    profiles = {}
    for user_id in ids:
        bought = facts.get(user_id)
        i = position.get(user_id)
        spent = bought.spent if bought else 0.0
        # The guide's `(now - last purchase).days`; a user without purchases counts "now" as the last.
        days = (now - bought.last_purchase_at).days if bought else 0
        act = activity.get(user_id)
        days_active = (now - act.last_activity_at).total_seconds() / 86400 if act and act.last_activity_at else None
        engagement = engagement_score(
            days_active,
            act.events_last_30_days if act else 0,
            bought.purchases if bought else 0,
            spent,
        )
        predictions = {name: _number(values[i]) for name, values in scored["models"].items()} if bought and scored["models"] else None
        profiles[user_id] = {
            "user_id": user_id,
            # The engagement score is the user's profile score (written back to Postgres by the
            # analytics worker); show it as such rather than the value stored before this run.
            "user": {**users[user_id], "profile_score": round(engagement, 2)},
            "segment": segment(days, spent),
            "engagement": round(engagement, 2),
            "churn_risk": round(churn_risk(days), 1),
            "predicted_ltv": predictions["clv"] if predictions else None,
            "p_alive": predictions["p_alive"] if predictions else None,
            "expected_purchases_90d": predictions["expected_purchases_90d"] if predictions else None,
            "expected_average_spend": predictions["expected_average_spend"] if predictions else None,
            "rfm": _rfm(scored["rfm"], i) if bought and scored["rfm"] else None,
            "totals": {
                "total_spent": round(spent, 2),
                "purchases": bought.purchases if bought else 0,
                "repeat_purchase_days": bought.purchase_days - 1 if bought else 0,
                "events": act.events if act else 0,
                "events_last_30_days": act.events_last_30_days if act else 0,
                "days_since_last_purchase": days if bought else None,
                "last_purchase_at": _iso(bought.last_purchase_at) if bought else None,
                "last_activity_at": act.last_activity_at.isoformat() if act and act.last_activity_at else None,
            },
            "recommendations": [str(item) for item in recommendations.get(user_id, [])],
            "model_version": model.version if model else None,
            "computed_at": now.isoformat(),
        }
    return profiles


class _PhaseClock:
    """Times each phase of a computation; a profile that took longer than SLOW_PROFILE_MS per
    user is logged with its phases, so a slow miss says which store it waited on."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.phases: dict[str, float] = {}

    def __call__(self, name, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.phases[name] = round((time.perf_counter() - started) * 1000, 2)

    def report(self, users: int) -> None:
        total = (time.perf_counter() - self.started) * 1000
        LAST_PHASES.set({**self.phases, "compute": round(total, 2)})
        if total / max(users, 1) > SLOW_PROFILE_MS:
            log.warning("profile_slow", users=users, total_ms=round(total, 1), **{f"{k}_ms": v for k, v in self.phases.items()})


def _number(value) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfm(scores: dict[str, np.ndarray], i: int) -> dict:
    r, f, m = (int(scores[name][i]) for name in ("recency", "frequency", "monetary"))
    return {"recency": r, "frequency": f, "monetary": m, "code": f"{r}{f}{m}"}


def _score_customers(model: Model | None, facts: list[Purchases], today: date) -> dict:
    """Model outputs and RFM scores of customers, vectorised; BG/NBD's conventions: frequency
    counts repeat purchase days, recency and age are weeks from the first purchase day."""
    result: dict = {"models": None, "rfm": None}
    if model is None or not facts:
        return result
    first = np.array([(f.first_day - EPOCH).days for f in facts], dtype=np.float64)
    last = np.array([(f.last_day - EPOCH).days for f in facts], dtype=np.float64)
    purchase_days = np.array([f.purchase_days for f in facts], dtype=np.float64)
    spent = np.array([f.spent for f in facts])
    first_day_spent = np.array([f.first_day_spent for f in facts])
    x, t_x, T, m = model_inputs(first, last, purchase_days, spent, first_day_spent, (today - EPOCH).days)
    if model.bgnbd is not None:
        result["models"] = predict(model, x, t_x, T, m)
    if model.rfm is not None:
        result["rfm"] = {
            "recency": score_with_breakpoints(last, model.rfm.recency),
            "frequency": score_with_breakpoints(purchase_days, model.rfm.frequency),
            "monetary": score_with_breakpoints(spent, model.rfm.monetary),
        }
    return result


def model_inputs(first, last, purchase_days, spent, first_day_spent, end) -> tuple[np.ndarray, ...]:
    """BG/NBD's and Gamma-Gamma's (x, t_x, T, m) from the summary columns (days since 1970 for
    `first`, `last` and `end`, the last day of observation): frequency counts repeat purchase days,
    recency and age are weeks from the first purchase day, m is the mean spend of a repeat day.
    The fit, a profile and the dashboard's distributions all read a customer this way."""
    x = purchase_days - 1
    t_x = (last - first) / 7.0
    T = (end - first) / 7.0
    m = np.where(x > 0, (spent - first_day_spent) / np.maximum(x, 1), 0.0)
    return x, t_x, T, m


def predict(model: Model, x, t_x, T, m) -> dict[str, np.ndarray]:
    settings = get_settings()
    bgnbd, gg = model.bgnbd, model.gamma_gamma
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

