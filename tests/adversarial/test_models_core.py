"""Careless and hostile inputs to the three repeat-purchase models (shared.analytics.stats.registry).

docs/models.md promises that every model's fit refuses what it cannot identify with a reason (no
repeat buyer, every age 0), reports convergence and bounds, and that predictions stay finite and
fast whatever the parameters. These tests feed each model what a careless caller would: NaN,
negative or fractional counts, impossible recencies, bad weights, degenerate populations,
extreme histories and parameters at the fits' bounds.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from shared.analytics.stats import MODELS, UnidentifiedModel

NAMES = sorted(MODELS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("x, t_x, T, weights, why", [
    ([1, np.nan], [1.0, 0.0], [2.0, 2.0], None, "finite"),
    ([1, 2], [1.0, np.inf], [2.0, 2.0], None, "finite"),
    ([-1, 2], [0.0, 1.0], [2.0, 2.0], None, "non-negative integer"),
    ([1.5, 2], [1.0, 1.0], [2.0, 2.0], None, "non-negative integer"),
    ([1, 2], [3.0, 1.0], [2.0, 2.0], None, "recency"),
    ([0, 2], [1.0, 1.0], [2.0, 2.0], None, "recency must be 0"),
    ([1, 2], [1.0, 1.0], [2.0, 2.0], [1.0, -1.0], "non-negative"),
    ([1, 2], [1.0, 1.0], [2.0, 2.0], [1.0, np.nan], "finite"),
    ([1, 2], [1.0, 1.0], [2.0, 2.0], [1.0], "align"),
    ([], [], [], None, "empty"),
])
def test_bad_input_is_refused_with_a_reason(name, x, t_x, T, weights, why):
    with pytest.raises(ValueError, match=why):
        MODELS[name].fit(np.array(x, dtype=float), np.array(t_x, dtype=float), np.array(T, dtype=float),
                         weights=weights)


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_populations_are_refused_not_fitted_at_the_start_point(name):
    fit = MODELS[name].fit
    n = 2000
    with pytest.raises(UnidentifiedModel) as err:
        fit(np.zeros(n), np.zeros(n), np.random.default_rng(0).uniform(0, 52, n))
    assert err.value.model and "repeat purchase" in err.value.reason
    with pytest.raises(UnidentifiedModel) as err:
        fit(np.zeros(n), np.zeros(n), np.zeros(n))
    assert "T = 0" in err.value.reason


@pytest.mark.parametrize("name", NAMES)
def test_a_lone_repeat_buyer_gives_a_flagged_but_usable_fit(name):
    model = MODELS[name]
    n = 10_000
    x, t_x, T = np.zeros(n), np.zeros(n), np.full(n, 30.0)
    x[0], t_x[0] = 1, 29.0
    fit = model.fit(x, t_x, T)
    values = np.array([getattr(fit, k) for k in model.parameter_names])
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert set(fit.standard_errors) == set(model.parameter_names)
    for k in fit.at_bounds:                      # held at a bound: no standard error claimed
        assert np.isnan(fit.standard_errors[k])
    pa = model.probability_alive(fit, x, t_x, T)
    e = model.conditional_expected_purchases(fit, 52.0, x, t_x, T)
    assert np.all(np.isfinite(pa)) and np.all((pa >= 0) & (pa <= 1))
    assert np.all(np.isfinite(e)) and np.all(e >= 0)


EXTREME_X = np.array([0, 0, 1, 1, 5000, 100_000, 3, 0])
EXTREME_TX = np.array([0.0, 0.0, 1 / 7, 1 / 7, 520.0, 5000.0, 10.0, 0.0])
EXTREME_T = np.array([0.0, 1 / 7, 1 / 7, 5200.0, 520.0, 5000.0, 5000.0, 5000.0])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("values", [(1e-4, 1e-4, 1e-4, 1e-4), (1e4, 1e4, 1e4, 1e4), (1e-4, 1e4, 1e4, 1e-4),
                                    (1e4, 1e-4, 1e-4, 1e4), (0.5, 0.01, 10.0, 1000.0), (0.5, 0.02, 1.0, 1000.0)])
def test_scores_stay_finite_and_fast_at_any_parameters(name, values):
    model = MODELS[name]
    params = model.make_params(dict(zip(model.parameter_names, values, strict=True)))
    t0 = time.perf_counter()
    ll = model.log_likelihood(params, EXTREME_X, EXTREME_TX, EXTREME_T)
    pa = model.probability_alive(params, EXTREME_X, EXTREME_TX, EXTREME_T)
    e = model.conditional_expected_purchases(params, 52.14, EXTREME_X, EXTREME_TX, EXTREME_T)
    new = model.expected_purchases(params, np.array([0.0, 1.0, 52.14, 521.4]))
    seconds = time.perf_counter() - t0
    for arr in (ll, pa, e, new):
        assert np.all(np.isfinite(arr)), (values, arr)
    assert np.all((pa >= 0) & (pa <= 1)) and np.all(e >= 0) and np.all(new >= 0)
    assert seconds < 1.0, seconds
