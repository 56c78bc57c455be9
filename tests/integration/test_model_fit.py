"""Population models fitted through the API on purchases sent through the events API."""
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.analytics.models import fit_bgnbd, fit_gamma_gamma, summarise_purchases
from tests.fixtures import wait_for
from tests.helpers import purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


@pytest.fixture(scope="module")
def buyers(app, mongo):
    client = app.test_client()
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    users, events = [], []
    for _ in range(60):
        user_id = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
        users.append(user_id)
        first = int(rng.integers(60, 200))
        for day in sorted({first, *rng.integers(1, first, size=int(rng.integers(0, 6))).tolist()}):
            when = (now - timedelta(days=int(day))).isoformat()
            events.append(purchase(user_id, float(rng.gamma(6.0, 5.0)), "music", timestamp=when))
    for start in range(0, len(events), 500):
        assert client.post("/api/events/batch", json={"events": events[start:start + 500]}).status_code == 202
    ids = [e["event_id"] for e in events]
    wait_for(lambda: mongo.events.count_documents({"event_id": {"$in": ids}}) == len(ids), what="purchases stored")
    return users


def direct_fit(mongo, as_of):
    rows = list(mongo.events.find({"event_type": "user_purchase"}, {"user_id": 1, "timestamp": 1, "metadata.price": 1}))
    summary = summarise_purchases(
        np.array([r["user_id"] for r in rows]),
        np.array([r["timestamp"].replace(tzinfo=None) for r in rows], dtype="datetime64[ms]"),
        np.array([r["metadata"]["price"] for r in rows]),
        as_of,
    )
    return summary, fit_bgnbd(summary.frequency, summary.recency, summary.T), fit_gamma_gamma(summary.frequency, summary.monetary_value)


def test_fit_matches_a_direct_fit_and_profiles_use_it(client, mongo, buyers):
    as_of = (datetime.now(UTC) - timedelta(days=5)).date()
    response = client.post("/api/analytics/models/fit", json={"as_of": as_of.isoformat()})
    assert response.status_code == 200, response.get_json()
    fitted = response.get_json()
    summary, bgnbd, gamma_gamma = direct_fit(mongo, as_of)
    assert fitted["as_of"] == as_of.isoformat()
    assert fitted["n_customers"] == len(summary)
    for name in ("r", "alpha", "a", "b", "log_likelihood"):
        assert fitted["bgnbd"][name] == pytest.approx(getattr(bgnbd, name), rel=1e-9)
    for name in ("p", "q", "gamma", "log_likelihood"):
        assert fitted["gamma_gamma"][name] == pytest.approx(getattr(gamma_gamma, name), rel=1e-9)
    assert client.get("/api/analytics/models/latest").get_json()["version"] == fitted["version"]

    user_id = buyers[0]
    profile = wait_for(lambda: (p := client.get(f"/api/users/{user_id}/profile").get_json())["model_version"] == fitted["version"] and p,
                       what="profile scored with the new model")
    assert 0 < profile["p_alive"] <= 1
    assert profile["expected_purchases_90d"] > 0
    assert profile["predicted_ltv"] > 0
    assert profile["rfm"]["code"] == f"{profile['rfm']['recency']}{profile['rfm']['frequency']}{profile['rfm']['monetary']}"

    event = purchase(user_id, 80.0, "music")
    client.post("/api/events", json=event)
    wait_for(lambda: mongo.events.find_one({"event_id": event["event_id"]}), what="new purchase stored")
    after = client.get(f"/api/users/{user_id}/profile").get_json()
    assert after["totals"]["purchases"] == profile["totals"]["purchases"] + 1
    assert after["p_alive"] != profile["p_alive"] or after["expected_purchases_90d"] != profile["expected_purchases_90d"]
    assert after["predicted_ltv"] != profile["predicted_ltv"]


def test_fit_input_is_validated(client):
    future = client.post("/api/analytics/models/fit", json={"as_of": "2999-01-01"})
    assert future.status_code == 422 and future.get_json()["errors"][0]["field"] == "as_of"
    garbage = client.post("/api/analytics/models/fit", json={"as_of": "someday"})
    assert garbage.status_code == 422 and garbage.get_json()["errors"][0]["field"] == "as_of"
    too_early = client.post("/api/analytics/models/fit", json={"as_of": "2001-01-01"})
    assert too_early.status_code == 422 and "customers" in too_early.get_json()["detail"]
