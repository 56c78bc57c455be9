"""Erasure and export of one person's data, through the real pipeline."""
import json
import uuid

import pytest
import redis as redis_lib
from sqlalchemy import select, text

from shared.contracts.settings import get_settings
from shared.contracts.tables import AppliedBatch, Base, CategorySales
from shared.infra.db import session_scope
from tests.fixtures import wait_for
from tests.helpers import purchase, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


def person_with_history(client, mongo, services, category: str) -> dict:
    body = signup_body()
    user_id = client.post("/api/users/signup", json=body).get_json()["id"]
    events = [purchase(user_id, 40.0, category), purchase(user_id, 25.5, category),
              {"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "page_view", "metadata": {"page": "/"}}]
    assert client.post("/api/events/batch", json={"events": events}).status_code == 202
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id}) == 4, what="the events stored")
    wait_for(lambda: services["mail"].to(body["email"]) and mongo.welcome_emails.find_one({"_id": user_id}),
             what="the welcome e-mail and its record")
    wait_for(lambda: ((mongo.profiles.find_one({"_id": user_id}) or {}).get("totals") or {}).get("total_spent") == 65.5,
             what="the stored profile with both purchases")
    wait_for(lambda: client.get(f"/api/users/{user_id}/profile").headers["X-Cache"] == "HIT", what="a cached profile")
    return {"id": user_id, "username": body["username"], "email": body["email"]}


def traces_in_postgres(person: dict) -> list[str]:
    found = []
    with session_scope() as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(text(f"SELECT t::text AS row FROM {table.name} t")).scalars()
            found += [f"{table.name}: {row}" for row in rows if person["email"] in row or person["username"] in row]
            if "user_id" in table.columns:
                count = session.scalar(text(f"SELECT count(*) FROM {table.name} WHERE user_id = :id"),
                                       {"id": person["id"]})
                found += [f"{table.name}: {count} rows with user_id"] if count else []
        found += [f"users: id {person['id']}"] if session.scalar(text("SELECT 1 FROM users WHERE id = :id"),
                                                                {"id": person["id"]}) else []
        outbox = session.scalar(text("SELECT count(*) FROM outbox WHERE payload ->> 'user_id' = :id"),
                                {"id": str(person["id"])})
        found += [f"outbox: {outbox} messages naming the id"] if outbox else []
    return found


def traces_in_mongodb(mongo, person: dict) -> list[str]:
    found = []
    for name in mongo.list_collection_names():
        collection = mongo[name]
        count = collection.count_documents({"$or": [{"user_id": person["id"]}, {"_id": person["id"]}]})
        found += [f"{name}: {count} documents of the id"] if count else []
        for doc in collection.find({}, {"_id": 0}):
            flat = json.dumps(doc, default=str)
            if person["email"] in flat or person["username"] in flat:
                found.append(f"{name}: {flat[:200]}")
    return found


def traces_in_redis(person: dict) -> list[str]:
    r = redis_lib.Redis.from_url(get_settings().redis_url)
    found = []
    for raw in r.scan_iter(match=get_settings().cache_prefix + "*", count=1000):
        name = raw.decode()
        if str(person["id"]) in name.split(":"):
            found.append(f"key {name}")
        kind = r.type(raw).decode()
        if kind == "string":
            value = (r.get(raw) or b"").decode(errors="replace")
            if person["email"] in value or person["username"] in value:
                found.append(f"{name}: {value[:200]}")
        elif kind == "set" and r.sismember(raw, person["id"]):
            found.append(f"{name} holds the id")
    return found


def category_sales(category: str):
    with session_scope() as session:
        row = session.scalar(select(CategorySales).where(CategorySales.category == category))
        return (row.purchases, float(row.spent)) if row else None


def test_an_erased_person_is_found_in_no_store(client, mongo, services):
    category = f"Erasure-{uuid.uuid4().hex[:6]}"
    bystander = person_with_history(client, mongo, services, category)
    person = person_with_history(client, mongo, services, category)
    assert traces_in_postgres(person) and traces_in_mongodb(mongo, person) and traces_in_redis(person)
    wait_for(lambda: category_sales(category) == (4, 131.0), what="both people's sales counted")

    erased = client.delete(f"/api/users/{person['id']}")
    assert erased.status_code == 202, erased.get_json()
    assert erased.get_json()["user_id"] == person["id"]
    # At once, in the request's transaction: all but what the worker removes once it has done its
    # part:
    # the erasure's own outbox message and its `erasures` row (the id only, until confirmed).
    assert set(traces_in_postgres(person)) <= {"outbox: 1 messages naming the id", "erasures: 1 rows with user_id"}
    assert category_sales(category) == (2, 65.5)  # the person's share of the population figures
    wait_for(lambda: not traces_in_mongodb(mongo, person) and not traces_in_redis(person), timeout=30,
             what="MongoDB and Redis to forget the person")
    wait_for(lambda: not traces_in_postgres(person), what="the erasure's own outbox message to go")

    # Afterwards: nothing about them is served, nothing for them is accepted, a repeat is a 404.
    assert client.get(f"/api/users/{person['id']}/profile").status_code == 404
    assert client.get(f"/api/users/{person['id']}/export").status_code == 404
    refused = client.post("/api/events", json=purchase(person["id"], 10.0, category))
    assert refused.status_code == 422 and refused.get_json()["errors"][0]["field"] == "user_id"
    assert client.delete(f"/api/users/{person['id']}").status_code == 404
    # The bystander keeps everything.
    assert mongo.events.count_documents({"user_id": bystander["id"]}) == 4
    assert client.get(f"/api/users/{bystander['id']}/profile").get_json()["totals"]["total_spent"] == 65.5


def test_events_in_flight_for_an_erased_person_are_not_stored(client, mongo, app):
    """A batch already queued when the person was erased: the worker stores it, sees the person
    gone, and deletes what it wrote (shared.pipeline.erasure)."""
    from shared.contracts.topology import STORE_EVENTS

    body = signup_body()
    user_id = client.post("/api/users/signup", json=body).get_json()["id"]
    person = {"id": user_id, "email": body["email"], "username": body["username"]}
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id}) == 1, what="the signup event")
    assert client.delete(f"/api/users/{user_id}").status_code == 202
    wait_for(lambda: mongo.events.count_documents({"user_id": user_id}) == 0, what="the erasure")

    batch_id = f"in-flight-{uuid.uuid4()}"
    event = purchase(user_id, 99.0, "Books", timestamp="2026-11-01T10:00:00+00:00")
    app.extensions["celery"].send_task(STORE_EVENTS, kwargs={"events": [event]}, task_id=batch_id)

    def handled() -> bool:
        with session_scope() as session:
            return session.get(AppliedBatch, batch_id) is not None

    wait_for(handled, what="the batch handled")
    assert mongo.events.count_documents({"user_id": user_id}) == 0
    assert not mongo.profiles.find_one({"_id": user_id})
    assert traces_in_redis(person) == []  # not even the cache version counters the write bumped


def test_export_holds_everything_about_the_person(client, mongo, services):
    category = f"Export-{uuid.uuid4().hex[:6]}"
    person = person_with_history(client, mongo, services, category)
    response = client.get(f"/api/users/{person['id']}/export")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    document = response.get_json()
    assert document["user"]["email"] == person["email"] and document["user"]["address"]["city"] == "Kyiv"
    assert sorted(e["event_type"] for e in document["events"]) == ["page_view", "user_created", "user_purchase",
                                                                    "user_purchase"]
    assert document["profile"]["totals"]["total_spent"] == 65.5
    assert document["profile"]["username"] == person["username"]
    assert document["purchase_summary"]["purchases"] == 2 and document["purchase_summary"]["spent"] == 65.5
    assert document["categories"] == [{"category": category, "purchases": 2, "spent": 65.5}]
    assert sum(day["events"] for day in document["activity_days"]) == 4
    assert document["welcome_email"]["to"] == person["email"]
    assert client.get("/api/users/2147483000/export").status_code == 404
