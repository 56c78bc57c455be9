"""A user's analytics profile: the guide's rules, the population models and recommendations.

Computed for a batch of users at once from what is kept per user (Postgres: the user with the
address, the customer summary, the categories bought, the daily activity counters) and the
current population model (MongoDB `models`, decoded once per process and version), vectorised
with numpy. Nothing read grows with the population: a profile costs the same at a thousand
customers and at ten million. The analytics worker calls it to rescore users; the API calls it
on a cache miss, so both always agree.
"""
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, ParamSpec, TypeVar, overload

import numpy as np
import numpy.typing as npt
from pymongo.database import Database
from sqlalchemy.orm import Session

from shared.analytics import fitted_models
from shared.analytics import sessions as person_sessions
from shared.analytics.fitted_models import FittedModel
from shared.analytics.stats import (
    WEEKS_PER_MONTH,
    churn_risks,
    conditional_expected_average_spend,
    conditional_expected_purchases,
    customer_lifetime_value,
    engagement_scores,
    probability_alive,
    score_with_breakpoints,
    segments,
)
from shared.analytics.stats.registry import MODELS as PURCHASE_MODELS
from shared.analytics.stats.registry import Model
from shared.contracts.event_time import EPOCH, to_milliseconds
from shared.contracts.settings import Settings, get_settings
from shared.contracts.users import user_records
from shared.infra.logging import get_logger
from shared.infra.mongo import Document
from shared.pipeline import activity as activity_counters
from shared.pipeline import summaries

PREDICTION_DAYS = 90
RECOMMENDATIONS = 5
SLOW_PROFILE_MS = 50.0
log = get_logger("pulse.profiles")
# Milliseconds per phase of the last computation in this context (the API's request): the profile
# view sends them as a Server-Timing header, so a client sees where a miss spent its time.
_P = ParamSpec("_P")
_T = TypeVar("_T")
_Floats = npt.NDArray[np.float64]
LAST_PHASES: ContextVar[dict[str, float] | None] = ContextVar("pulse_profile_phases", default=None)


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


@overload
def count_ahead_as_now(first_day: date, last_day: date, last_purchase_at: datetime,
                       now: datetime) -> tuple[date, date, datetime]: ...
@overload
def count_ahead_as_now(first_day: npt.NDArray[Any], last_day: npt.NDArray[Any], last_purchase_at: npt.NDArray[Any],
                       now: datetime) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]: ...
def count_ahead_as_now(first_day: Any, last_day: Any, last_purchase_at: Any, now: datetime) -> tuple[Any, Any, Any]:
    """The one rule for purchases stamped ahead of now (timestamps may run up to a day ahead,
    shared.contracts.schemas): they count, as made now. Their day becomes today and their instant now; they
    stay in the purchase days, the purchases and the spend. A profile and the dashboard's batch
    over everyone (services.analytics.customer_stats) both apply it, to the summary, so the two
    always agree and neither reads the event log. Works on numpy arrays (days since 1970, seconds
    since 1970) and on one customer's dates."""
    if isinstance(last_purchase_at, datetime):
        today = now.date()
        return min(first_day, today), min(last_day, today), min(last_purchase_at, now)
    today_days = (now.date() - EPOCH).days
    return (np.minimum(first_day, today_days), np.minimum(last_day, today_days),
            np.minimum(last_purchase_at, now.timestamp()))


def load_purchase_facts(db: Database[Document], session: Session, user_ids: list[int],
                        now: datetime) -> dict[int, Purchases]:
    stored = summaries.load(session, user_ids)
    categories = summaries.load_categories(session, list(stored))
    facts: dict[int, Purchases] = {}
    for user_id, s in stored.items():
        first_day, last_day, last_purchase_at = count_ahead_as_now(s.first_day, s.last_day, s.last_purchase_at, now)
        facts[user_id] = Purchases(first_day, last_day, last_purchase_at, s.purchase_days, s.purchases, s.spent,
                                   s.first_day_spent, categories.get(user_id, []))
    return facts


def compute_profiles(
    db: Database[Document], session: Session, user_ids: list[int], now: datetime | None = None
) -> dict[int, dict[str, Any]]:
    """Profiles of the given users that exist in Postgres, keyed by user id."""
    # Milliseconds, as MongoDB keeps the purchase instants the days are counted against.
    now = now or datetime.now(UTC)
    now = to_milliseconds(now)
    clock = _PhaseClock()
    users = clock("users", user_records, session, user_ids)
    ids = sorted(users)
    if not ids:
        return {}
    facts = clock("purchases", load_purchase_facts, db, session, ids, now)
    activity = clock("activity", activity_counters.load, session, ids, now)
    # Those users' events of the window only (ix_user_time), sorted here: exact in any arrival order.
    sessions = clock("sessions", person_sessions.load, db, ids, now, get_settings().session_idle_minutes)
    model = clock("model", fitted_models.current.get, db)
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
    rules = _guide_rules(ids, facts, activity, now)

    profiles = {}
    for row, user_id in enumerate(ids):
        bought = facts.get(user_id)
        i = position.get(user_id)
        spent = bought.spent if bought else 0.0
        days = int(rules["days"][row])
        act = activity.get(user_id)
        engagement = float(rules["engagement"][row])
        predictions = ({name: _number(values[i]) for name, values in scored["models"].items()}
                       if bought and scored["models"] else None)
        profiles[user_id] = {
            "user_id": user_id,
            # The engagement score is the user's profile score (written back to Postgres by the
            # analytics worker); show it as such rather than the value stored before this run.
            "user": {**users[user_id], "profile_score": round(engagement, 2)},
            "segment": str(rules["segment"][row]),
            "engagement": round(engagement, 2),
            "churn_risk": round(float(rules["churn_risk"][row]), 1),
            "predicted_ltv": predictions["clv"] if predictions else None,
            "p_alive": predictions["p_alive"] if predictions else None,
            "expected_purchases_90d": predictions["expected_purchases_90d"] if predictions else None,
            "expected_average_spend": predictions["expected_average_spend"] if predictions else None,
            # i is set whenever bought is (the customers are the users with purchase facts).
            "rfm": _rfm(scored["rfm"], i) if bought and scored["rfm"] and i is not None else None,
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
            "sessions": sessions.get(user_id, person_sessions.NO_SESSIONS).as_profile(),
            "recommendations": [str(item) for item in recommendations.get(user_id, [])],
            "model_version": model.version if model else None,
            # Which purchase model gave p_alive, expected_purchases_90d and predicted_ltv.
            "scoring_model": model.scoring_model if model and predictions else None,
            "computed_at": now.isoformat(),
        }
    return profiles


def _guide_rules(ids: list[int], facts: dict[int, Any], activity: dict[int, Any],
                 now: datetime) -> dict[str, np.ndarray]:
    """The guide's segment and churn risk and the engagement score of the users, in the order of
    `ids`, by the vector rules the dashboard's distributions use too (shared.analytics.stats.rules)."""
    bought = [facts.get(u) for u in ids]
    acts = [activity.get(u) for u in ids]
    # The guide's `(now - last purchase).days`; a user without purchases counts "now" as the last.
    days = np.array([(now - b.last_purchase_at).days if b else 0 for b in bought], dtype=np.int64)
    spent = np.array([b.spent if b else 0.0 for b in bought], dtype=np.float64)
    # Never active: NaN, a recency term of 0.
    days_active = np.array([(now - a.last_activity_at).total_seconds() / 86400 if a and a.last_activity_at
                            else np.nan for a in acts], dtype=np.float64)
    engagement = engagement_scores(
        days_active,
        np.array([a.events_last_30_days if a else 0 for a in acts], dtype=np.float64),
        np.array([b.purchases if b else 0 for b in bought], dtype=np.float64),
        spent,
    )
    return {"days": days, "segment": segments(days, spent), "churn_risk": churn_risks(days),
            "engagement": engagement}


class _PhaseClock:
    """Times each phase of a computation; a profile that took longer than SLOW_PROFILE_MS per
    user is logged with its phases, so a slow miss says which store it waited on."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.phases: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.phases[name] = round((time.perf_counter() - started) * 1000, 2)

    def report(self, users: int) -> None:
        total = (time.perf_counter() - self.started) * 1000
        LAST_PHASES.set({**self.phases, "compute": round(total, 2)})
        if total / max(users, 1) > SLOW_PROFILE_MS:
            log.warning("profile_slow", users=users, total_ms=round(total, 1),
                        **{f"{k}_ms": v for k, v in self.phases.items()})


def _number(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfm(scores: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    r, f, m = (int(scores[name][i]) for name in ("recency", "frequency", "monetary"))
    return {"recency": r, "frequency": f, "monetary": m, "code": f"{r}{f}{m}"}


def _score_customers(model: FittedModel | None, facts: list[Purchases], today: date) -> dict[str, Any]:
    """Model outputs and RFM scores of customers, vectorised; BG/NBD's conventions: frequency
    counts repeat purchase days, recency and age are weeks from the first purchase day."""
    result: dict[str, Any] = {"models": None, "rfm": None}
    if model is None or not facts:
        return result
    first = np.array([(f.first_day - EPOCH).days for f in facts], dtype=np.float64)
    last = np.array([(f.last_day - EPOCH).days for f in facts], dtype=np.float64)
    purchase_days = np.array([f.purchase_days for f in facts], dtype=np.float64)
    spent = np.array([f.spent for f in facts])
    first_day_spent = np.array([f.first_day_spent for f in facts])
    x, t_x, T, m = model_inputs(first, last, purchase_days, spent, first_day_spent, (today - EPOCH).days)
    if model.purchase is not None:
        result["models"] = predict(model, x, t_x, T, m)
    if model.rfm is not None:
        result["rfm"] = {
            "recency": score_with_breakpoints(last, model.rfm.recency),
            "frequency": score_with_breakpoints(purchase_days, model.rfm.frequency),
            "monetary": score_with_breakpoints(spent, model.rfm.monetary),
        }
    return result


def model_inputs(first: _Floats, last: _Floats, purchase_days: _Floats, spent: _Floats, first_day_spent: _Floats,
                 end: float | _Floats) -> tuple[np.ndarray, ...]:
    """BG/NBD's and Gamma-Gamma's (x, t_x, T, m) from the summary columns (days since 1970 for
    `first`, `last` and `end`, the last day of observation): frequency counts repeat purchase days,
    recency and age are weeks from the first purchase day, m is the mean spend of a repeat day.
    The fit, a profile and the dashboard's distributions all read a customer this way."""
    x = purchase_days - 1
    t_x = (last - first) / 7.0
    T = (end - first) / 7.0
    m = np.where(x > 0, (spent - first_day_spent) / np.maximum(x, 1), 0.0)
    return x, t_x, T, m


def predict(model: FittedModel, x: _Floats, t_x: _Floats, T: _Floats, m: _Floats) -> dict[str, np.ndarray]:
    """P(alive), expected purchases over PREDICTION_DAYS, expected spend and CLV from the stored
    model's scoring purchase model (model.scoring_model) and Gamma-Gamma."""
    settings = get_settings()
    purchase, gg = model.purchase, model.gamma_gamma
    if model.scoring_model == "bgnbd":
        # BG/NBD's own CLV reuses one hypergeometric evaluation per distinct (x, T) for every month.
        p_alive = probability_alive(purchase, x, t_x, T)
        expected = conditional_expected_purchases(purchase, PREDICTION_DAYS / 7, x, t_x, T)
    else:
        spec = PURCHASE_MODELS[model.scoring_model]
        p_alive = spec.probability_alive(purchase, x, t_x, T)
        expected = spec.conditional_expected_purchases(purchase, PREDICTION_DAYS / 7, x, t_x, T)
    scores = {"p_alive": p_alive, "expected_purchases_90d": expected}
    if gg is not None:
        scores["expected_average_spend"] = conditional_expected_average_spend(gg, x, m)
        if model.scoring_model == "bgnbd":
            scores["clv"] = customer_lifetime_value(
                purchase, gg, x, t_x, T, m,
                horizon_months=settings.clv_horizon_months,
                monthly_discount_rate=settings.clv_monthly_discount_rate,
            )
        else:
            scores["clv"] = _lifetime_value(PURCHASE_MODELS[model.scoring_model], purchase,
                                            scores["expected_average_spend"], x, t_x, T, settings)
    else:
        scores["expected_average_spend"] = np.full(len(x), np.nan)
        scores["clv"] = np.full(len(x), np.nan)
    return scores



def _lifetime_value(spec: Model, params: Any, spend: _Floats, x: _Floats, t_x: _Floats, T: _Floats,
                    settings: Settings) -> np.ndarray:
    """CLV by the method of shared.analytics.stats.clv (lifetimes' discounted monthly cash flows)
    for a purchase model other than BG/NBD: expected spend times the expected purchases of each
    month, discounted monthly."""
    clv = np.zeros(np.shape(x), dtype=np.float64)
    previous = np.zeros_like(clv)
    for k in range(1, int(settings.clv_horizon_months) + 1):
        current = spec.conditional_expected_purchases(params, k * WEEKS_PER_MONTH, x, t_x, T)
        clv += spend * (current - previous) / (1.0 + settings.clv_monthly_discount_rate) ** k
        previous = current
    return clv
