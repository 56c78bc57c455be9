"""The guide's queries as endpoints, on data sent through the real pipeline."""
import uuid

import pytest
from sqlalchemy import func, select

from shared.contracts.tables import Address, City, Country, User
from shared.infra.db import session_scope
from tests.fixtures import keyed_client, wait_for
from tests.helpers import count_statements, purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


@pytest.fixture(scope="module")
def shop(app, mongo):
    """Three buyers with purchases in categories unique to this module."""
    client = keyed_client(app)
    tag = uuid.uuid4().hex[:6]
    categories = {f"books-{tag}": [], f"games-{tag}": [], f"tools-{tag}": []}
    users = [client.post("/api/users/signup", json=signup_body(city=city, country=cc)).get_json()["id"]
             for city, cc in (("Kyiv", "UA"), ("Kharkiv", "UA"), ("Warsaw", "PL"))]
    events = []
    for n, user_id in enumerate(users):
        for i, (category, prices) in enumerate(categories.items()):
            if i <= n:
                price = 100.0 * (n + 1) + 10 * i
                prices.append(price)
                events.append(purchase(user_id, price, category))
    assert client.post("/api/events/batch", json={"events": events}).status_code == 202
    ids = [e["event_id"] for e in events]
    wait_for(lambda: mongo.events.count_documents({"event_id": {"$in": ids}}) == len(events),
             what="shop events stored")
    wait_for(lambda: mongo.profiles.count_documents({"user_id": {"$in": users}, "totals.purchases": {"$gt": 0}}) == 3,
             what="shop profiles computed")
    return {"users": users, "categories": categories}


def test_top_categories_is_the_guide_aggregation(client, shop):
    items = client.get("/api/analytics/categories/top?limit=100").get_json()["items"]
    ours = [item for item in items if item["category"] in shop["categories"]]
    expected = sorted(
        ({"category": c, "total_sales": round(sum(p), 2), "transactions": len(p),
          "avg_price": round(sum(p) / len(p), 2)}
         for c, p in shop["categories"].items()),
        key=lambda row: -row["total_sales"],
    )
    assert ours == expected
    assert len(client.get("/api/analytics/categories/top?limit=2").get_json()["items"]) == 2
    assert client.get("/api/analytics/categories/top?limit=0").status_code == 422


def test_countries_stats_are_one_group_by_matching_the_tables(client, shop):
    with count_statements() as statements:
        items = client.get("/api/stats/countries").get_json()["items"]
    assert len(statements) == 1 and "GROUP BY" in statements[0]
    with session_scope() as session:
        expected = dict(
            session.execute(
                select(Country.code, func.count(User.id)).join(City).join(Address).join(User).group_by(Country.code)
            ).all()
        )
    assert {row["code"]: row["users"] for row in items} == expected
    assert {"UA", "PL"} <= set(expected)


def test_top_users_by_score_come_sorted_with_addresses(client, shop):
    wait_for(lambda: all(client.get(f"/api/users/{u}").get_json()["profile_score"] > 0 for u in shop["users"]),
             what="scores written back")
    items = client.get("/api/users/top?min_score=0&limit=100").get_json()["items"]
    scores = [u["profile_score"] for u in items]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert all(u["address"]["country"]["code"] and u["address"]["city"] for u in items)
    assert {u["address"]["country"]["code"] for u in items if u["id"] in shop["users"]} == {"UA", "PL"}
    best = max(scores)
    above = client.get(f"/api/users/top?min_score={best - 0.001}").get_json()["items"]
    assert [u["profile_score"] for u in above] == [s for s in scores if s > best - 0.001]
    assert client.get("/api/users/top?min_score=abc").status_code == 422


def test_segments_count_the_profiles(client, mongo, shop):
    with count_statements() as statements:
        items = client.get("/api/analytics/segments").get_json()["items"]
    assert len(statements) == 1 and "GROUP BY" in statements[0]
    counted = {row["segment"]: row["users"] for row in items}
    assert set(counted) <= {"ACTIVE", "VIP", "AT_RISK", "DORMANT"}
    # The same segments as the profile documents (both are written by each rescoring).
    for segment, users in counted.items():
        assert mongo.profiles.count_documents({"segment": segment}) == users
    assert sum(counted.values()) == mongo.profiles.count_documents({"segment": {"$ne": None}})


def test_cache_stats_expose_lru_and_profile_counters(client, shop):
    client.get(f"/api/users/{shop['users'][0]}/profile")
    client.get(f"/api/users/{shop['users'][0]}/profile")
    stats = client.get("/api/stats/cache").get_json()
    assert stats["lru"]["countries"]["hits"] + stats["lru"]["countries"]["misses"] > 0
    assert stats["profiles"]["hits"] >= 1
