"""The guide's rules, the engagement score, RFM scores and recommendations."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from shared.analytics.stats import (
    ACTIVE,
    AT_RISK,
    DORMANT,
    VIP,
    churn_risks,
    days_since_last_purchase,
    engagement_scores,
    quintile_scores,
    recommend,
    rfm_scores,
    segments,
)

# --- segment: each branch and each boundary, in the guide's order -------------------------
SEGMENT_CASES = [
    (91, 5000.0, DORMANT),      # days > 90 wins even over VIP spend
    (90, 5000.0, VIP),          # 90 is not > 90
    (90, 1000.0, ACTIVE),       # 1000 is not > 1000; 90 days, spent >= 100
    (10, 1000.01, VIP),
    (29, 99.99, AT_RISK),
    (30, 99.99, ACTIVE),        # 30 is not < 30
    (29, 100.0, ACTIVE),        # 100 is not < 100
    (0, 0.0, AT_RISK),          # the guide's no-purchase user (days = 0, spent = 0)
    (60, 50.0, ACTIVE),
    (91, 0.0, DORMANT),
]


def segment(days, spent) -> str:
    """One user: the vector rule on a row of one."""
    [value] = segments([days], [spent])
    return str(value)


def churn_risk(days) -> float:
    [value] = churn_risks([days])
    return float(value)


def engagement_score(days_active, events_last_30_days, purchases, spent) -> float:
    [value] = engagement_scores([np.nan if days_active is None else days_active], [events_last_30_days],
                                [purchases], [spent])
    return float(value)


@pytest.mark.parametrize("days, spent, expected", SEGMENT_CASES)
def test_segment_branches_and_boundaries(days, spent, expected):
    assert segment(days, spent) == expected


def test_segments_of_many_users_at_once():
    days = np.array([c[0] for c in SEGMENT_CASES])
    spent = np.array([c[1] for c in SEGMENT_CASES])
    np.testing.assert_array_equal(segments(days, spent), [c[2] for c in SEGMENT_CASES])


def test_days_since_last_purchase_follows_the_guide():
    now = dt.datetime(2024, 5, 1, 12, 0)
    assert days_since_last_purchase([], now) == 0                        # no purchase -> now
    assert segment(days_since_last_purchase([], now), 0.0) == AT_RISK
    dates = [dt.datetime(2024, 4, 1, 13, 0), dt.datetime(2024, 4, 20, 12, 0, 1)]
    assert days_since_last_purchase(dates, now) == 10                    # 10 days 23:59:59
    # the guide's examples: VIP (bought 2024-01-10, 1300 spent), DORMANT (2023-09-01)
    guide_now = dt.datetime(2024, 1, 20)
    assert segment(days_since_last_purchase([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 10)],
                                            guide_now), 1300) == VIP
    assert segment(days_since_last_purchase([dt.datetime(2023, 9, 1)], guide_now), 100) == DORMANT


# --- churn: the guide's formula 100 / (1 + exp(-(days - 30) / 20)) ------------------------
# The table printed in the guide (13.5, 29.2, 50.0, 70.8, 86.5) does not follow from its own
# code; these are the code's values (see shared/analytics/stats/rules.py).
CHURN = {5: 22.3, 15: 32.1, 30: 50.0, 45: 67.9, 60: 81.8}


@pytest.mark.parametrize("days, pct", sorted(CHURN.items()))
def test_churn_risk_formula_table(days, pct):
    assert round(churn_risk(days), 1) == pct
    assert churn_risk(days) == pytest.approx(100 / (1 + math.exp(-(days - 30) / 20)), rel=1e-12)


def test_churn_risk_of_many_users_and_extremes():
    d = np.array(sorted(CHURN))
    np.testing.assert_allclose(churn_risks(d), [churn_risk(v) for v in d], rtol=1e-12)
    np.testing.assert_allclose(churn_risks(d), [100 / (1 + math.exp(-(v - 30) / 20)) for v in d], rtol=1e-12)
    assert churn_risk(1e6) == 100.0 and churn_risk(-1e6) == 0.0          # no overflow
    assert np.all(np.diff(churn_risks(np.arange(0, 400))) > 0)


# --- engagement --------------------------------------------------------------------------
def test_engagement_formula_values():
    assert engagement_score(0, 0, 0, 0) == pytest.approx(35.0)           # active today only
    assert engagement_score(None, 0, 0, 0) == 0.0
    expected = 100 * (0.35 * math.exp(-1) + 0.25 * (1 - math.exp(-0.5))
                      + 0.20 * (1 - math.exp(-1)) + 0.20 * (1 - math.exp(-1)))
    assert engagement_score(30, 10, 5, 500) == pytest.approx(expected, rel=1e-12)
    assert engagement_score(0, 1e9, 1e9, 1e12) == pytest.approx(100.0)
    # monotone in each argument
    assert engagement_score(5, 3, 2, 50) > engagement_score(20, 3, 2, 50)
    assert engagement_score(5, 4, 2, 50) > engagement_score(5, 3, 2, 50)
    assert engagement_score(5, 3, 3, 50) > engagement_score(5, 3, 2, 50)
    assert engagement_score(5, 3, 2, 60) > engagement_score(5, 3, 2, 50)


def test_engagement_bounds_for_any_input():
    rng = np.random.default_rng(11)
    specials = np.array([0.0, -1.0, -1e308, 1e308, np.inf, -np.inf, np.nan, 1e-300])
    cols = [np.r_[specials, rng.normal(0, 1e4, 2000)] for _ in range(4)]
    grids = np.meshgrid(*[specials] * 4, indexing="ij")
    for d, e, n, s in [cols, [g.ravel() for g in grids]]:
        v = engagement_scores(d, e, n, s)
        assert v.shape == d.shape and np.all((v >= 0) & (v <= 100)) and not np.isnan(v).any()
        idx = np.random.default_rng(0).choice(d.size, 300)
        scal = [engagement_score(d[i], e[i], n[i], s[i]) for i in idx]
        assert all(0 <= x <= 100 for x in scal)
        np.testing.assert_allclose(scal, v[idx], rtol=1e-12, atol=1e-12)


# --- RFM ------------------------------------------------------------------------------------
def test_rfm_quintiles_ties_and_tiny_populations():
    np.testing.assert_array_equal(quintile_scores(np.arange(10)), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    np.testing.assert_array_equal(quintile_scores([7.0]), [3])
    np.testing.assert_array_equal(quintile_scores([4, 4, 4, 4]), [3, 3, 3, 3])
    np.testing.assert_array_equal(quintile_scores([1, 2]), [2, 4])
    s = quintile_scores(np.r_[np.zeros(60), np.arange(1, 41)])          # heavy tie at 0
    assert len(set(s[:60])) == 1
    assert quintile_scores([]).size == 0


def test_rfm_scores_codes_and_direction():
    days = np.array([1, 200, 30, 5, 90])
    freq = np.array([10, 0, 2, 4, 1])
    spent = np.array([900.0, 10.0, 150.0, 300.0, 40.0])
    r = rfm_scores(days, freq, spent)
    np.testing.assert_array_equal(r.recency, [5, 1, 3, 4, 2])            # recent = high
    np.testing.assert_array_equal(r.frequency, [5, 1, 3, 4, 2])
    np.testing.assert_array_equal(r.monetary, [5, 1, 3, 4, 2])
    np.testing.assert_array_equal(r.code, ["555", "111", "333", "444", "222"])
    np.testing.assert_array_equal(r.total, [15, 3, 9, 12, 6])
    one = rfm_scores([3], [0], [25.0])
    assert one.code.tolist() == ["333"] and one.total.tolist() == [9]
    big = rfm_scores(*np.random.default_rng(2).integers(0, 10**6, (3, 100_000)))
    counts = np.bincount(big.recency, minlength=6)[1:]
    assert np.all(np.abs(counts - 20_000) < 200)


# --- recommendations ------------------------------------------------------------------------
PURCHASES = [  # (user, item)
    (1, "books"), (1, "music"),
    (2, "books"), (2, "music"), (2, "games"),
    (3, "books"), (3, "games"), (3, "garden"),
    (4, "toys"),
    (5, "books"), (5, "music"), (5, "games"), (5, "garden"), (5, "books"),
]
USERS = np.array([p[0] for p in PURCHASES])
ITEMS = np.array([p[1] for p in PURCHASES])


def test_recommend_from_similar_users_excluding_bought():
    rec = recommend([1, 3], USERS, ITEMS, k=5)
    # user 1 {books, music}: similar 2 (cos 2/sqrt6), 5 (2/sqrt8), 3 (1/sqrt6):
    # games = .816 + .707 + .408, garden = .707 + .408; toys only by popularity fallback
    assert rec[1] == ["games", "garden", "toys"]
    # user 3 {books, games, garden}: music from 1, 2, 5
    assert rec[3] == ["music", "toys"]
    assert not set(rec[3]) & {"books", "games", "garden"}


def test_recommend_fallback_to_popular_and_determinism():
    rec = recommend([4, 99], USERS, ITEMS, k=3)
    # user 4 shares nothing with anyone; 99 is unknown: most popular items they lack
    # popularity (distinct buyers): books 4, games 3, music 3, garden 2 -> ties by name
    assert rec[4] == ["books", "games", "music"]
    assert rec[99] == ["books", "games", "music"]
    assert recommend([1, 3, 4], USERS[::-1], ITEMS[::-1], k=5) == recommend([1, 3, 4], USERS,
                                                                           ITEMS, k=5)
    assert recommend([5], USERS, ITEMS, k=2) == {5: ["toys"]}            # bought all but one
    assert recommend([1], USERS, ITEMS, k=0) == {1: []}
    assert recommend([], USERS, ITEMS) == {}


def test_recommend_many_users_chunked_is_consistent():
    rng = np.random.default_rng(5)
    n = 20_000
    users = rng.integers(0, 3000, n)
    items = rng.integers(0, 300, n)
    targets = np.arange(0, 3000, 7)
    rec = recommend(targets, users, items, k=4)
    bought = {}
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        bought.setdefault(u, set()).add(i)
    for t in targets.tolist():
        assert len(rec[t]) == 4 and len(set(rec[t])) == 4
        assert not set(rec[t]) & bought.get(t, set())
    # a single target gives the same answer as in the batch
    assert recommend([int(targets[3])], users, items, k=4)[int(targets[3])] == rec[int(targets[3])]
