"""Which purchase model scores profiles (SCORING_MODEL), and one rule for purchases stamped ahead of
now in a profile and in the dashboard's distributions."""
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from services.analytics import customer_stats
from services.analytics.fitting import fit_population, query_numbers
from shared.analytics import fitted_models
from shared.analytics.profiles import compute_profiles
from shared.analytics.stats import simulate_bgnbd
from shared.analytics.stats.registry import MODELS
from shared.contracts.settings import get_settings
from shared.contracts.tables import CustomerSummary
from shared.infra.db import session_scope
from tests.fixtures import keyed_client, wait_for
from tests.helpers import finished_job, purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


@pytest.fixture(scope="module")
def customers(app, mongo):
    """120 customers drawn from BG/NBD with the CDNOW parameters (so every model is identified), and
    one whose second purchase is stamped 20 hours ahead of now (the schema accepts up to a day)."""
    client = keyed_client(app)
    rng = np.random.default_rng(21)
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    ages = rng.integers(14, 40, size=120) / 1.0  # weeks
    x, t_x, T = simulate_bgnbd(0.243, 4.414, 0.793, 2.426, ages, rng, day_resolution=True)
    ids, events = [], []
    for n in range(x.size):
        user_id = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
        ids.append(user_id)
        first = int(round(T[n] * 7))
        last = first - int(round(t_x[n] * 7))
        # x repeat purchase days, the last at t_x: the first x - 1 on distinct days before it.
        middle = sorted(rng.choice(np.arange(last + 1, first), size=int(x[n]) - 1, replace=False).tolist()) \
            if x[n] > 1 else []
        for day in [first, *middle, *([last] if x[n] > 0 else [])]:
            events.append(purchase(user_id, 25.0, "music", timestamp=(now - timedelta(days=int(day))).isoformat()))
    ahead = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
    real_now = datetime.now(UTC)
    events += [purchase(ahead, 40.0, "music", timestamp=(real_now - timedelta(days=10)).isoformat()),
               purchase(ahead, 60.0, "films", timestamp=(real_now + timedelta(hours=20)).isoformat())]
    for start in range(0, len(events), 500):
        assert client.post("/api/events/batch", json={"events": events[start:start + 500]}).status_code == 202
    expected = {u: sum(1 for e in events if e["user_id"] == u) for u in [*ids, ahead]}

    def summarised():
        with session_scope() as session:
            rows = dict(session.execute(select(CustomerSummary.user_id, CustomerSummary.purchases)
                                        .where(CustomerSummary.user_id.in_(list(expected)))).all())
        return rows == expected

    wait_for(summarised, timeout=90, what="every purchase summarised")
    return {"ids": ids, "ahead": ahead}


def batch_doc(user_id: int, model, now: datetime) -> dict:
    """The dashboard's distributions over this one customer, from the summary row the batch reads."""
    with session_scope() as session:
        rows = query_numbers(session, customer_stats._SUMMARIES + f" WHERE user_id = {int(user_id)}", 6)
    return customer_stats.compute(rows, model, now)


def test_a_purchase_stamped_ahead_counts_the_same_in_a_profile_and_the_distributions(client, mongo, customers):
    fitted = finished_job(client, client.post("/api/analytics/models/fit", json={}))
    assert fitted["status"] == "done", fitted["error"]
    model = fitted_models.current.get(mongo)
    assert model.version >= fitted["result"]["version"]
    ahead = customers["ahead"]
    profile = wait_for(lambda: (p := client.get(f"/api/users/{ahead}/profile").get_json())["model_version"]
                       == model.version and p, timeout=60, what="the profile scored by the new model")
    now = datetime.now(UTC)
    doc = batch_doc(ahead, model, now)
    # The rule: the purchase counts, as made now: two purchases, one repeat purchase day, bought today.
    assert profile["totals"]["purchases"] == 2 and profile["totals"]["total_spent"] == 100.0
    assert profile["totals"]["repeat_purchase_days"] == 1
    assert profile["totals"]["days_since_last_purchase"] == 0
    # ... and the dashboard's batch puts this customer in the bins of the profile's own numbers.
    for name, value, edges in (("p_alive", profile["p_alive"], customer_stats.P_ALIVE_EDGES),
                               ("churn_risk", profile["churn_risk"], customer_stats.CHURN_EDGES)):
        counts, _ = np.histogram([value], bins=edges)
        assert doc[name]["counts"] == counts.tolist(), (name, value, doc[name])
    assert doc["p_alive_by_buyers"]["repeat"]["counts"] == doc["p_alive"]["counts"]
    assert sum(doc["p_alive_by_buyers"]["one_time"]["counts"]) == 0
    # A repeat buyer whose last purchase is now: BG/NBD's P(alive) is 1/(1 + a/b), below 1 (counted
    # as a one-time buyer, as the profile counted it before, it would be 1).
    bg = model.purchase
    assert profile["p_alive"] == pytest.approx(1 / (1 + bg.a / bg.b), abs=1e-4)
    assert profile["p_alive"] < 0.9


def test_scoring_model_picks_the_model_that_scores_profiles(monkeypatch, mongo, customers):
    db = mongo
    today = datetime.now(UTC).date()
    monkeypatch.setenv("SCORING_MODEL", "pareto_nbd")
    get_settings.cache_clear()
    try:
        with session_scope() as session:
            stored = fit_population(db, session, today)
    finally:
        monkeypatch.delenv("SCORING_MODEL")
        get_settings.cache_clear()
    assert stored["scoring_model"] == "pareto_nbd"
    described = fitted_models.describe(fitted_models.latest(db))
    assert described["version"] == stored["version"] and described["scoring_model"] == "pareto_nbd"
    assert set(described["models"]) == set(MODELS)
    for name, fitted in described["models"].items():
        assert set(fitted["standard_errors"]) == set(MODELS[name].parameter_names), name
    model = fitted_models.current.get(db)
    assert model.version == stored["version"] and model.scoring_model == "pareto_nbd"
    pareto = model.models["pareto_nbd"]
    ids = customers["ids"]
    now = datetime.now(UTC)
    with session_scope() as session:
        profiles = compute_profiles(db, session, ids, now)
        rows = session.execute(select(CustomerSummary.user_id, CustomerSummary.first_day, CustomerSummary.last_day,
                                      CustomerSummary.purchase_days).where(CustomerSummary.user_id.in_(ids))).all()
    for user_id, first, last, days in rows:
        x, t_x, T = days - 1, (last - first).days / 7.0, (now.date() - first).days / 7.0
        expected = MODELS["pareto_nbd"].probability_alive(pareto, [x], [t_x], [T])[0]
        assert profiles[user_id]["scoring_model"] == "pareto_nbd"
        assert profiles[user_id]["model_version"] == model.version
        assert profiles[user_id]["p_alive"] == pytest.approx(float(expected), abs=1e-4)
    assert batch_doc(ids[0], model, now)["scoring_model"] == "pareto_nbd"
    # Back to the default for the rest of the run: the next fit is scored by BG/NBD again.
    with session_scope() as session:
        assert fit_population(db, session, today)["scoring_model"] == "bgnbd"
