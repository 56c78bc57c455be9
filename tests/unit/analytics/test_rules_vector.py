"""The guide's rules on their vector path (`segments`, `churn_risks`, `engagement_scores`), checked
against literal expectations rather than against the scalar functions: the profile computes one
user as a one-row vector, so these must stand on their own whatever happens to the scalar path.

Every boundary is checked on both sides (90 vs 91 days, 1000 vs 1000.01, 100, 30 days), and what
the vector functions do with a missing value (NaN) is pinned down as the code computes it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from shared.analytics.stats.rules import (
    ACTIVE,
    AT_RISK,
    DORMANT,
    ENGAGEMENT_WEIGHTS,
    VIP,
    churn_risks,
    engagement_scores,
    segments,
)

NAN = float("nan")

# (days since the last purchase, total spent, segment), each rule at and around its boundary.
SEGMENT_BOUNDARIES = [
    # DORMANT: days > 90, tested first, so it wins over any spend.
    (91, 0.0, DORMANT),
    (91, 5000.0, DORMANT),
    (90.01, 50.0, DORMANT),
    (90, 50.0, ACTIVE),          # 90 is not > 90, and 90 days is not < 30
    (90, 5000.0, VIP),
    (1e6, 1e6, DORMANT),
    # VIP: spent > 1000.
    (10, 1000.01, VIP),
    (10, 1000.0, ACTIVE),        # 1000 is not > 1000
    (10, 999.99, ACTIVE),
    (0, 1e9, VIP),
    (29, 1000.01, VIP),          # VIP is tested before AT_RISK
    # AT_RISK: spent < 100 and days < 30.
    (29, 99.99, AT_RISK),
    (29.99, 99.99, AT_RISK),
    (30, 99.99, ACTIVE),         # 30 is not < 30
    (29, 100.0, ACTIVE),         # 100 is not < 100
    (29, 100.01, ACTIVE),
    (0, 0.0, AT_RISK),           # the guide's no-purchase user: days 0 (now), spent 0
    (0, -5.0, AT_RISK),          # a refund-only user: negative spend is still < 100
    # Everything else: ACTIVE.
    (30, 500.0, ACTIVE),
    (60, 50.0, ACTIVE),
]


@pytest.mark.parametrize("days, spent, expected", SEGMENT_BOUNDARIES)
def test_segments_one_row_at_each_boundary(days, spent, expected):
    # One user as the profile computes them: a one-row vector, and a 0-d value.
    assert segments(np.array([days]), np.array([spent])).tolist() == [expected]
    assert str(segments(days, spent)) == expected


def test_segments_of_many_rows_keep_each_row_apart():
    days = np.array([d for d, _, _ in SEGMENT_BOUNDARIES])
    spent = np.array([s for _, s, _ in SEGMENT_BOUNDARIES])
    assert segments(days, spent).tolist() == [e for _, _, e in SEGMENT_BOUNDARIES]
    # Reversed rows give reversed answers: nothing leaks between rows.
    assert segments(days[::-1], spent[::-1]).tolist() == [e for _, _, e in SEGMENT_BOUNDARIES][::-1]


def test_segments_broadcast_a_scalar_against_rows():
    assert segments(np.array([0, 90, 91]), 5000.0).tolist() == [VIP, VIP, DORMANT]
    assert segments(10, np.array([99.99, 100.0, 1000.0, 1000.01])).tolist() == [AT_RISK, ACTIVE, ACTIVE, VIP]


def test_segments_give_seven_character_labels():
    # The labels are stored as text: a fixed-width dtype shorter than "DORMANT" would cut them.
    out = segments(np.array([91, 0, 0, 60]), np.array([0.0, 5000.0, 0.0, 500.0]))
    assert out.dtype == np.dtype("U7")
    assert set(out.tolist()) == {DORMANT, VIP, AT_RISK, ACTIVE}


@pytest.mark.parametrize("days, spent, expected", [
    # A missing value fails every comparison, so a rule that needs it does not match.
    (NAN, 0.0, ACTIVE),          # not DORMANT, not AT_RISK (NaN < 30 is false)
    (NAN, 5000.0, VIP),          # the spend alone still decides VIP
    (91, NAN, DORMANT),          # the days alone still decide DORMANT
    (10, NAN, ACTIVE),           # not VIP, not AT_RISK (NaN < 100 is false)
    (NAN, NAN, ACTIVE),
])
def test_segments_with_a_missing_value(days, spent, expected):
    assert segments(np.array([days]), np.array([spent])).tolist() == [expected]


# --- churn: 100 / (1 + exp(-(days - 30) / 20)) percent, as the code computes it -----------------

def guide_churn(days: float) -> float:
    return 100.0 / (1.0 + math.exp(-(days - 30.0) / 20.0))


@pytest.mark.parametrize("days", [0, 1, 5, 15, 29, 30, 31, 45, 60, 89, 90, 91, 120, 365])
def test_churn_risks_follow_the_logistic(days):
    assert churn_risks(np.array([days]))[0] == pytest.approx(guide_churn(days), rel=1e-12)


def test_churn_risks_midpoint_and_symmetry():
    assert churn_risks(np.array([30.0]))[0] == 50.0
    # A logistic around 30 days: d and 60 - d add up to 100 %.
    d = np.arange(0.0, 61.0)
    np.testing.assert_allclose(churn_risks(d) + churn_risks(60.0 - d), 100.0, rtol=1e-12)
    # The code's values, not the guide's printed table (shared/analytics/stats/rules.py).
    assert np.round(churn_risks(np.array([5, 15, 45, 60])), 1).tolist() == [22.3, 32.1, 67.9, 81.8]


def test_churn_risks_are_increasing_and_bounded_without_overflow():
    d = np.array([-1e308, -1e6, -200.0, 0.0, 30.0, 200.0, 1e6, 1e308, np.inf])
    with np.errstate(all="raise"):  # an overflow in the vector path would raise here
        risks = churn_risks(d)
    assert risks[0] == 0.0 and risks[-1] == 100.0 and churn_risks(np.array([-np.inf]))[0] == 0.0
    assert np.all(np.diff(risks) >= 0) and np.all(np.diff(churn_risks(np.arange(0, 400))) > 0)
    assert np.all((risks >= 0) & (risks <= 100))


def test_churn_risk_of_a_missing_day_count_is_missing():
    assert math.isnan(churn_risks(np.array([NAN]))[0])


# --- engagement: 100 * (0.35 R + 0.25 A + 0.20 F + 0.20 M), in [0, 100] -------------------------

def expected_engagement(days, events, purchases, spent) -> float:
    recency = 0.0 if days is None or math.isnan(days) else math.exp(-max(days, 0.0) / 30.0)
    return 100.0 * (0.35 * recency + 0.25 * (1 - math.exp(-events / 20.0))
                    + 0.20 * (1 - math.exp(-purchases / 5.0)) + 0.20 * (1 - math.exp(-spent / 500.0)))


def test_engagement_weights_sum_to_one():
    assert sum(ENGAGEMENT_WEIGHTS.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("days, events, purchases, spent", [
    (0, 0, 0, 0), (30, 10, 5, 500), (1, 1, 1, 1), (90, 20, 5, 1000), (91, 0, 0, 0),
    (29, 3, 2, 99.99), (365, 200, 50, 10_000),
])
def test_engagement_scores_follow_the_formula(days, events, purchases, spent):
    got = engagement_scores(np.array([days]), np.array([events]), np.array([purchases]), np.array([spent]))
    assert got[0] == pytest.approx(expected_engagement(days, events, purchases, spent), rel=1e-12)


def test_engagement_score_ends():
    def one(d, e, n, s):
        return float(engagement_scores(np.array([d]), np.array([e]), np.array([n]), np.array([s]))[0])

    assert one(0, 0, 0, 0) == pytest.approx(35.0)          # active today, nothing else: the recency weight
    assert one(NAN, 0, 0, 0) == 0.0                          # never active, nothing else
    assert one(np.inf, 0, 0, 0) == 0.0
    assert one(0, 1e9, 1e9, 1e12) == pytest.approx(100.0)
    assert one(NAN, 1e9, 1e9, 1e12) == pytest.approx(65.0)   # everything but the recency
    # Negative inputs count as nothing: a future last activity as today, refunds as no spend.
    assert one(-5, 0, 0, 0) == pytest.approx(35.0)
    assert one(0, -3, -1, -500) == pytest.approx(35.0)
    assert one(0, NAN, NAN, NAN) == pytest.approx(35.0)      # a missing count is no activity


def test_engagement_scores_increase_with_each_input():
    base = dict(d=5.0, e=3.0, n=2.0, s=50.0)

    def score(**changes):
        v = {**base, **changes}
        return float(engagement_scores(np.array([v["d"]]), np.array([v["e"]]), np.array([v["n"]]),
                                       np.array([v["s"]]))[0])

    assert score(d=4.0) > score() > score(d=6.0)   # more recent is more engaged
    assert score(e=4.0) > score()
    assert score(n=3.0) > score()
    assert score(s=60.0) > score()


def test_engagement_scores_stay_in_range_for_any_input():
    specials = np.array([0.0, -1.0, -1e308, 1e308, np.inf, -np.inf, np.nan, 1e-300, 30.0, 90.0])
    grids = [g.ravel() for g in np.meshgrid(*[specials] * 4, indexing="ij")]
    scores = engagement_scores(*grids)
    assert scores.shape == grids[0].shape
    assert not np.isnan(scores).any() and np.all((scores >= 0) & (scores <= 100))
