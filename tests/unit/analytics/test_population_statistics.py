"""What a fitted model stores instead of the population (RFM breakpoints, co-purchase weights)
gives the same answers as the population itself; fits say whether they converged and which
parameters they held at a bound."""
import numpy as np
import pytest

from shared.analytics.stats import (
    CoPurchases,
    fit_bgnbd,
    fit_co_purchases,
    fit_gamma_gamma,
    quintile_breakpoints,
    quintile_scores,
    recommend,
    rfm_scores,
    score_with_breakpoints,
)
from shared.analytics.stats.bgnbd import LOG_PARAM_BOUND

RNG_SEEDS = range(25)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_breakpoints_score_every_member_as_the_population_does(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    values = rng.integers(0, int(rng.integers(1, 30)), size=n).astype(float)  # heavy ties
    assert np.array_equal(score_with_breakpoints(values, quintile_breakpoints(values)), quintile_scores(values))


def test_breakpoints_place_new_values_between_members():
    population = np.arange(1.0, 11.0)  # scores 1,1,2,2,3,3,4,4,5,5
    breakpoints = quintile_breakpoints(population)
    assert breakpoints == [3.0, 5.0, 7.0, 9.0]
    assert score_with_breakpoints([0.5, 2.9, 3.0, 8.5, 100.0], breakpoints).tolist() == [1, 1, 2, 4, 5]
    # A population of one scores 3 (the median); a breakpoint that nobody reaches is None.
    single = quintile_breakpoints([42.0])
    assert single == [42.0, 42.0, None, None]
    assert score_with_breakpoints([42.0, 10.0], single).tolist() == [3, 1]


def test_rfm_through_breakpoints_equals_rfm_scores():
    rng = np.random.default_rng(3)
    days = rng.integers(0, 400, 1000)
    freq = rng.integers(1, 12, 1000)
    spent = np.round(rng.gamma(2.0, 80.0, 1000), 2)
    direct = rfm_scores(days, freq, spent)
    # Recency is stored on the day of the last purchase: fewer days since = a later day.
    last_day = 20_000 - days
    assert np.array_equal(score_with_breakpoints(last_day, quintile_breakpoints(last_day)), direct.recency)
    assert np.array_equal(score_with_breakpoints(freq, quintile_breakpoints(freq)), direct.frequency)
    assert np.array_equal(score_with_breakpoints(spent, quintile_breakpoints(spent)), direct.monetary)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_co_purchases_rank_as_user_based_recommendations(seed):
    rng = np.random.default_rng(seed)
    n_users = int(rng.integers(1, 300))
    items = [f"c{i}" for i in range(int(rng.integers(1, 15)))]
    users = rng.integers(0, n_users, size=int(rng.integers(1, 2000)))
    bought = np.array(rng.choice(items, size=users.size), dtype=object)
    targets = list(range(n_users + 3))  # the last ones bought nothing
    expected = recommend(targets, users, bought, k=5)
    model = fit_co_purchases(users, bought)
    baskets = {t: sorted(set(bought[users == t].tolist())) for t in targets}
    assert model.recommend(baskets, k=5) == expected


def test_co_purchases_survive_a_round_trip_through_a_document():
    model = fit_co_purchases([1, 1, 2, 2, 3, 3, 3], ["a", "b", "a", "c", "b", "c", "d"])
    again = CoPurchases.from_document(model.to_document())
    baskets = {1: ["a"], 2: ["d"], 9: []}
    assert again.recommend(baskets, k=3) == model.recommend(baskets, k=3)
    assert model.recommend(baskets, k=3)[9] == ["a", "b", "c"]  # nothing bought: the most popular


def test_co_purchases_keep_the_strongest_neighbours_only_beyond_the_limit():
    users = np.repeat(np.arange(50), 3)
    items = np.array([f"i{(u * 7 + k) % 40}" for u in range(50) for k in range(3)], dtype=object)
    full = fit_co_purchases(users, items)
    capped = fit_co_purchases(users, items, max_neighbours=2)
    assert full.weights.nnz > capped.weights.nnz
    assert np.diff(capped.weights.indptr).max() <= 2
    assert fit_co_purchases(users, items, max_items=5).items.size == 5


def test_a_well_identified_fit_converges_inside_the_bounds():
    rng = np.random.default_rng(11)
    from shared.analytics.stats import simulate_bgnbd, simulate_gamma_gamma_spend

    x, t_x, T = simulate_bgnbd(0.25, 4.0, 0.8, 2.5, np.full(5000, 39.0), rng)
    fit = fit_bgnbd(x, t_x, T)
    assert fit.converged and fit.at_bounds == ()
    m = simulate_gamma_gamma_spend(6.0, 4.0, 15.0, x, rng)
    gg = fit_gamma_gamma(x, m)
    assert gg.converged and gg.at_bounds == ()


def test_a_fit_the_data_cannot_identify_is_held_at_its_bounds_and_says_so():
    # Nobody ever drops out: every customer buys steadily until the end, so the drop-out
    # parameters run off towards a -> 0, b -> infinity.
    rng = np.random.default_rng(0)
    n = 20_000
    T = np.full(n, 52.0)
    x = rng.poisson(rng.gamma(2.0, 0.2, n) * 52)
    t_x = np.where(x > 0, 52 - rng.uniform(0, 1, n), 0.0)
    fit = fit_bgnbd(x, t_x, T)
    assert set(fit.at_bounds) >= {"a"} and fit.converged
    assert fit.a == pytest.approx(1e-4, rel=1e-6)
    assert all(np.isfinite([fit.r, fit.alpha, fit.a, fit.b, fit.log_likelihood]))
    # Identical spends: no heterogeneity for Gamma-Gamma to find; p and q run off together.
    spend = np.where(x > 0, 50.0 + rng.normal(0, 0.01, n), 0.0)
    gg = fit_gamma_gamma(x, spend)
    assert {"p", "q"} <= set(gg.at_bounds)
    assert max(gg.p, gg.q) <= np.exp(LOG_PARAM_BOUND) * (1 + 1e-9)
