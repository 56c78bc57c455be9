"""Population models fitted through the API on purchases sent through the events API, and
profiles scored from summaries and the stored model that equal a full recomputation from the
raw event log."""
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select

from shared.analytics.purchases import load_purchases
from shared.analytics.stats import (
    conditional_expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    frequency_recency,
    gamma_gamma_log_likelihood,
    probability_alive,
    recommend,
    rfm_scores,
)
from shared.contracts.tables import CustomerSummary
from shared.infra.db import session_scope
from tests.fixtures import keyed_client, wait_for
from tests.helpers import finished_job, purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")
CATEGORIES = ["music", "films", "games", "comics", "vinyl", "posters"]


@pytest.fixture(scope="module")
def buyers(app, mongo):
    client = keyed_client(app)
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    users, events = [], []
    for _ in range(60):
        user_id = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
        users.append(user_id)
        first = int(rng.integers(60, 200))
        taste = rng.choice(CATEGORIES, size=3, replace=False)
        for day in sorted({first, *rng.integers(1, first, size=int(rng.integers(0, 6))).tolist()}):
            when = (now - timedelta(days=int(day))).isoformat()
            events.append(purchase(user_id, float(rng.gamma(6.0, 5.0)), str(rng.choice(taste)), timestamp=when))
    for start in range(0, len(events), 500):
        assert client.post("/api/events/batch", json={"events": events[start:start + 500]}).status_code == 202
    ids = [e["event_id"] for e in events]
    wait_for(lambda: mongo.events.count_documents({"event_id": {"$in": ids}}) == len(ids), what="purchases stored")
    # Every purchase in the database (other tests' too) summarised: the fit and the recount below
    # must see the same population.
    # Users' purchases: a visitor's guest purchase (negative user_id) enters the summaries when merged.
    wait_for(lambda: summarised() == mongo.events.count_documents({"event_type": "user_purchase",
                                                                   "user_id": {"$gt": 0}}),
             what="every stored purchase summarised")
    return users


def summarised() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.coalesce(func.sum(CustomerSummary.purchases), 0))))


def direct_fit(mongo, as_of):
    log = load_purchases(mongo)
    summary = frequency_recency(log.user_id, log.timestamp, log.amount, as_of)
    return summary, fit_bgnbd(summary.frequency, summary.recency, summary.T), fit_gamma_gamma(summary.frequency,
                                                                                              summary.monetary_value)


def test_fit_matches_a_direct_fit_and_profiles_match_a_full_recomputation(client, mongo, buyers):
    as_of = (datetime.now(UTC) - timedelta(days=5)).date()
    response = client.post("/api/analytics/models/fit", json={"as_of": as_of.isoformat()})
    # A job: answered at once, queued, its result read from its Location once the worker is done.
    assert response.status_code == 202 and response.get_json()["status"] == "queued", response.get_json()
    assert response.get_json()["kind"] == "fit" and response.get_json()["params"] == {"as_of": as_of.isoformat()}
    job = finished_job(client, response)
    assert job["status"] == "done", job
    assert job["started_at"] >= job["submitted_at"] and job["finished_at"] >= job["started_at"]
    fitted = job["result"]
    summary, bgnbd, gamma_gamma = direct_fit(mongo, as_of)
    assert fitted["as_of"] == as_of.isoformat()
    assert fitted["n_customers"] == len(summary)
    assert fitted["converged"] is True
    assert fitted["bgnbd"]["at_bounds"] == list(bgnbd.at_bounds)
    for name in ("r", "alpha", "a", "b", "log_likelihood"):
        assert fitted["bgnbd"][name] == pytest.approx(getattr(bgnbd, name), rel=1e-9)
    # Every purchase model is fitted and stored, with standard errors; BG/NBD scores profiles.
    assert fitted["scoring_model"] == "bgnbd"
    assert fitted["models"]["bgnbd"]["parameters"] == {k: fitted["bgnbd"][k] for k in ("r", "alpha", "a", "b")}
    assert set(fitted["models"]["bgnbd"]["standard_errors"]) == {"r", "alpha", "a", "b"}
    assert fitted["bgnbd"]["standard_errors"] == fitted["models"]["bgnbd"]["standard_errors"]
    # The summaries' spend is exact decimal, the direct one float sums: equal to the last bits,
    # which moves the Gamma-Gamma optimum along its flat directions (by 1e-7 on this module's
    # buyers, more with other tests' customers in the database). The same fit is the same maximum.
    ours = [fitted["gamma_gamma"][name] for name in ("p", "q", "gamma")]
    assert gamma_gamma_log_likelihood(ours, summary.frequency, summary.monetary_value) == pytest.approx(
        gamma_gamma.log_likelihood, abs=1e-6)
    assert fitted["gamma_gamma"]["log_likelihood"] == pytest.approx(gamma_gamma.log_likelihood, abs=1e-6)
    assert fitted["population"]["customers"] >= len(buyers)
    assert fitted["population"]["categories"] >= len(CATEGORIES)
    latest = client.get("/api/analytics/models/latest").get_json()
    assert latest["version"] == fitted["version"] and latest["bgnbd"] == fitted["bgnbd"]

    # Everyone is rescored with the new model in the background; read the profiles once they are.
    def rescored():
        found = {u: client.get(f"/api/users/{u}/profile").get_json() for u in buyers}
        return all(p["model_version"] == fitted["version"] and p["scoring_model"] == "bgnbd"
                   for p in found.values()) and found

    profiles = wait_for(rescored, timeout=60, what="every buyer rescored with the new model")

    # A full recomputation from the raw log, the way profiles were computed before summaries:
    # RFM quintiles over everyone now, user-based recommendations, the models on each history.
    now = datetime.now(UTC)
    log = load_purchases(mongo).until(now)
    today = frequency_recency(log.user_id, log.timestamp, log.amount, now.date())
    rfm = rfm_scores(today.days_since_last_purchase, today.frequency + 1, today.total_spent)
    recommendations = recommend(buyers, log.user_id, log.category, k=5)
    row = {int(u): i for i, u in enumerate(today.user_id)}
    idx = [row[u] for u in buyers]
    x, t_x, T = today.frequency[idx], today.recency[idx], today.T[idx]
    p_alive = probability_alive(bgnbd, x, t_x, T)
    expected = conditional_expected_purchases(bgnbd, 90 / 7, x, t_x, T)
    for n, user_id in enumerate(buyers):
        profile, i = profiles[user_id], row[user_id]
        assert profile["rfm"]["code"] == str(rfm.code[i]), user_id
        assert profile["recommendations"] == recommendations[user_id], user_id
        assert profile["totals"]["purchases"] == int(today.n_purchases[i])
        assert profile["totals"]["repeat_purchase_days"] == int(today.frequency[i])
        assert profile["totals"]["total_spent"] == round(float(today.total_spent[i]), 2)
        assert profile["p_alive"] == pytest.approx(p_alive[n], abs=1e-4)
        assert profile["expected_purchases_90d"] == pytest.approx(expected[n], abs=1e-4)

    user_id = buyers[0]
    profile = profiles[user_id]
    assert 0 < profile["p_alive"] <= 1
    assert profile["expected_purchases_90d"] > 0
    assert profile["predicted_ltv"] > 0
    event = purchase(user_id, 80.0, "music")
    client.post("/api/events", json=event)
    wait_for(lambda: mongo.events.find_one({"event_id": event["event_id"]}), what="new purchase stored")
    after = wait_for(lambda: (p := client.get(f"/api/users/{user_id}/profile").get_json())["totals"]["purchases"]
                     == profile["totals"]["purchases"] + 1 and p, what="the new purchase in the profile")
    assert (after["p_alive"] != profile["p_alive"]
            or after["expected_purchases_90d"] != profile["expected_purchases_90d"])
    assert after["predicted_ltv"] != profile["predicted_ltv"]


def test_fit_input_is_validated(client, mongo):
    future = client.post("/api/analytics/models/fit", json={"as_of": "2999-01-01"})
    assert future.status_code == 422 and future.get_json()["errors"][0]["field"] == "as_of"
    garbage = client.post("/api/analytics/models/fit", json={"as_of": "someday"})
    assert garbage.status_code == 422 and garbage.get_json()["errors"][0]["field"] == "as_of"
    # Too few customers up to as_of is known only to the worker: the job fails and says why.
    too_early = finished_job(client, client.post("/api/analytics/models/fit", json={"as_of": "1980-01-01"}))
    assert too_early["status"] == "failed" and too_early["result"] is None
    assert "customers" in too_early["error"]["detail"] and too_early["error"]["field"] == "as_of"
    # A body must be the object the document describes: JSON null is not "no body" (found by
    # schemathesis once the database held customers enough to fit).
    for body in ("null", "[]", "3"):
        refused = client.post("/api/analytics/models/fit", data=body, content_type="application/json")
        assert refused.status_code == 422 and refused.get_json()["errors"][0]["field"] == "body", body
