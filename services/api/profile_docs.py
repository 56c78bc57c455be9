"""The profile's response schema, each field explained (it feeds the OpenAPI docs)."""
from pydantic import BaseModel, Field

from shared.contracts.users import UserOut

PROFILE_DOC = """
Segment and churn risk follow the companion guide's rules exactly; engagement is a documented
0–100 blend of recent activity, purchase frequency and spend (also stored as the user's
`profile_score`). Model outputs come from the newest population fit (the purchase model named by
`scoring_model`, BG/NBD unless SCORING_MODEL says otherwise; Gamma-Gamma for spend) and are `null` for users
without a purchase or before the first fit.
A profile read after an event has been stored always includes that event.
"""


class RFMOut(BaseModel):
    recency: int = Field(description="1–5, population quintile of days since the last purchase (5 = most recent)")
    frequency: int = Field(description="1–5, quintile of the number of distinct purchase days")
    monetary: int = Field(description="1–5, quintile of the total spent")
    code: str = Field(description='The three scores as one code, e.g. "545"')


class TotalsOut(BaseModel):
    total_spent: float
    purchases: int = Field(description="Purchase events")
    repeat_purchase_days: int = Field(description="Distinct purchase days after the first (BG/NBD's x)")
    events: int = Field(description="All stored events of the user")
    events_last_30_days: int
    days_since_last_purchase: int | None
    last_purchase_at: str | None
    last_activity_at: str | None


class SessionsOut(BaseModel):
    last_30_days: int = Field(
        description="Sessions in the last 30 days: runs of the user's events with gaps shorter than "
        "SESSION_IDLE_MINUTES (default 30), formed from the events `totals.events_last_30_days` counts "
        "(since the start of the UTC day 30 days ago; a session begun earlier counts from its first event "
        "inside). Every event type counts, `user_created` too. Exact whatever order the events arrived in")
    average_minutes_30d: float | None = Field(
        description="Mean length of those sessions in minutes (last event − first event; a one-event session "
        "lasts 0); null without a session")


class ProfileOut(BaseModel):
    user_id: int
    user: UserOut
    segment: str = Field(
        description="The guide's rules in order: DORMANT when more than 90 days since the last "
        "purchase; VIP when spent > 1000; AT_RISK when spent < 100 and the last purchase within "
        "30 days; else ACTIVE. A user without purchases counts as purchasing today (the guide's code)."
    )
    engagement: float = Field(
        description="0–100: 100·(0.35·e^(−days since any activity/30) + 0.25·(1−e^(−events in 30 days/20)) "
        "+ 0.20·(1−e^(−purchases/5)) + 0.20·(1−e^(−spent/500)))"
    )
    churn_risk: float = Field(description="Percent; the guide's logistic 100/(1+e^(−(days since purchase−30)/20))")
    predicted_ltv: float | None = Field(
        description="Customer lifetime value: discounted expected revenue over CLV_HORIZON_MONTHS "
        "(default 12) at CLV_MONTHLY_DISCOUNT_RATE (default 1%/month), from the scoring model and Gamma-Gamma"
    )
    p_alive: float | None = Field(description="The scoring model's probability that the customer is still active")
    expected_purchases_90d: float | None = Field(
        description="The scoring model's expected purchase days in the next 90 days, given the user's history"
    )
    expected_average_spend: float | None = Field(
        description="Gamma-Gamma expected value of a future purchase day"
    )
    rfm: RFMOut | None
    totals: TotalsOut
    sessions: SessionsOut
    recommendations: list[str] = Field(
        description="Categories that users with similar purchases bought and this user has not"
    )
    model_version: int | None = Field(description="Version of the population models used")
    scoring_model: str | None = Field(
        None, description="Purchase model that scored p_alive, expected purchases and LTV (bgnbd, pareto_nbd or "
        "mbgnbd); null without model outputs")
    computed_at: str
