"""The historical backfill, run as a user runs it (`pulse backfill FILE`)."""
import json
import subprocess
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from shared.contracts.tables import CustomerSummary, User
from shared.infra.db import session_scope
from shared.pipeline import summaries
from tests.fixtures import PULSE, ROOT, wait_for

pytestmark = pytest.mark.usefixtures("pipeline")


def backfill(path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([PULSE, "backfill", str(path), "--quiet", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def user_ids(*usernames: str) -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(select(func.lower(User.username), User.id)
                               .where(func.lower(User.username).in_([u.lower() for u in usernames])))
        return dict(rows.all())


def summary(user_id: int) -> CustomerSummary | None:
    with session_scope() as session:
        return session.get(CustomerSummary, user_id)


def no_drift(mongo, ids) -> bool:
    with session_scope() as session:
        drifts = summaries.check(mongo, session, list(ids))
        session.rollback()
    return all(d.rows == 0 for d in drifts)


def test_ndjson_history_is_imported_once_with_right_summaries(tmp_path, client, mongo):
    tag = uuid.uuid4().hex[:6]
    existing = client.post("/api/users/signup", json={
        "username": f"old_{tag}", "email": f"old.{tag}@example.com", "full_name": "Old Customer",
        "address": {"street": "Sumska Street", "city": "Kharkiv", "country_code": "UA"}}).get_json()["id"]
    lines = [
        {"username": f"Hist_{tag}", "email": f"hist.{tag}@example.com", "full_name": "Historic Buyer",
         "address": {"street": "Nowy Swiat 1", "city": "Warsaw", "country_code": "PL"}, "created_at": "2025-01-01"},
        {"username": f"hist_{tag}", "event_type": "user_purchase", "timestamp": "2025-02-01T10:00:00Z",
         "metadata": {"product_id": "B-1", "price": 19.99, "category": "books"}},
        {"username": f"hist_{tag}", "event_type": "user_purchase", "timestamp": "2025-02-01T18:00:00Z",
         "metadata": {"product_id": "B-2", "price": 5.01, "category": "books", "quantity": 2}},
        {"username": f"hist_{tag}", "event_type": "page_view", "timestamp": "2025-02-03T10:00:00Z",
         "metadata": {"page": "/books"}},
        {"event_id": f"given-{tag}", "user_id": existing, "event_type": "user_purchase",
         "timestamp": "2025-03-01T10:00:00Z", "metadata": {"product_id": "T-1", "price": 40, "category": "toys"}},
        # A user already in Pulse, named by username.
        {"username": f"OLD_{tag}", "event_type": "user_purchase", "timestamp": "2025-03-02T10:00:00Z",
         "metadata": {"product_id": "T-2", "price": 2.5, "category": "toys"}},
    ]
    path = tmp_path / "history.ndjson"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    first = backfill(path)
    assert first.returncode == 0, first.stderr
    assert "1 created" in first.stdout and "5 stored" in first.stdout and "0 skipped" in first.stdout
    hist = user_ids(f"hist_{tag}")[f"hist_{tag}"]
    assert summary(hist).purchases == 2 and summary(hist).purchase_days == 1
    assert summary(hist).spent == Decimal("25.00")
    assert summary(existing).spent == Decimal("42.5") and summary(existing).purchase_days == 2
    assert mongo.events.count_documents({"user_id": hist}) == 3
    assert no_drift(mongo, [hist, existing])
    # The imported customer is rescored like any other.
    wait_for(lambda: mongo.profiles.find_one({"user_id": hist, "totals.purchases": 2}),
             what="imported customer profiled")

    again = backfill(path)
    assert again.returncode == 0, again.stderr
    assert "0 created" in again.stdout and "0 stored, 5 already stored" in again.stdout
    assert summary(hist).purchases == 2 and no_drift(mongo, [hist, existing])


def test_csv_of_transactions_creates_customers_and_is_idempotent(tmp_path, mongo):
    tag = uuid.uuid4().hex[:6]
    path = tmp_path / "transactions.csv"
    # Two identical rows are two purchases (the second gets its own id).
    path.write_text("customer_id,date,quantity,amount\n"
                    "1,19970101,1,29.33\n1,19970118,2,29.73\n1,19970118,2,29.73\n"
                    "2,1997-01-02,1,9.99\n3,1997-01-03T12:00:00Z,4,0\n")
    args = ["--country", "EE", "--city", "Tartu", "--username-prefix", f"cd{tag}_"]
    first = backfill(path, *args)
    assert first.returncode == 0, first.stderr
    assert "3 created" in first.stdout and "5 stored" in first.stdout
    ids = user_ids(*(f"cd{tag}_{n}" for n in (1, 2, 3)))
    one = summary(ids[f"cd{tag}_1"])
    assert (one.purchases, one.purchase_days, one.spent, one.first_day_spent) == (3, 2, Decimal("88.79"),
                                                                                  Decimal("29.33"))
    assert str(one.first_day) == "1997-01-01"
    with session_scope() as session:
        user = session.get(User, ids[f"cd{tag}_1"])
        assert user.created_at.date().isoformat() == "1997-01-01"  # a customer since the first purchase
        assert user.address.city.name == "Tartu"
    assert no_drift(mongo, ids.values())
    again = backfill(path, *args)
    assert again.returncode == 0 and "0 stored, 5 already stored" in again.stdout
    assert summary(ids[f"cd{tag}_1"]).purchases == 3


def test_an_invalid_line_is_named_and_nothing_is_imported(tmp_path, mongo):
    tag = uuid.uuid4().hex[:6]
    lines = [
        json.dumps({"username": f"ok_{tag}", "email": f"ok.{tag}@example.com", "full_name": "Fine",
                    "address": {"street": "A", "city": "Kyiv", "country_code": "UA"}}),
        json.dumps({"username": f"ok_{tag}", "event_type": "user_purchase", "event_id": f"neg-{tag}",
                    "metadata": {"product_id": "X", "price": -5, "category": "books"}}),
        "{not json",
        json.dumps({"username": f"ghost_{tag}", "event_type": "login"}),
    ]
    path = tmp_path / "bad.ndjson"
    path.write_text("\n".join(lines) + "\n")
    result = backfill(path)
    assert result.returncode == 1
    assert "line 2: metadata.price" in result.stderr and "line 3: line: not JSON" in result.stderr
    assert f"no user 'ghost_{tag}'" in result.stderr and "nothing imported" in result.stderr
    assert user_ids(f"ok_{tag}") == {}

    skipped = backfill(path, "--skip-invalid")
    assert skipped.returncode == 1 and "1 created" in skipped.stdout
    assert mongo.events.count_documents({"event_id": f"neg-{tag}"}) == 0


def test_ndjson_lines_with_anonymous_ids_are_visitors_and_link_when_both_ids_are_given(tmp_path, client, mongo):
    tag = uuid.uuid4().hex[:6]
    user = client.post("/api/users/signup", json={
        "username": f"vis_{tag}", "email": f"vis.{tag}@example.com", "full_name": "Visiting Buyer",
        "address": {"street": "Sumska Street", "city": "Kharkiv", "country_code": "UA"}}).get_json()["id"]
    guest, stranger = f"guest-{tag}", f"stranger-{tag}"
    lines = [
        {"anonymous_id": guest, "event_type": "user_purchase", "timestamp": "2025-02-01T10:00:00Z",
         "metadata": {"product_id": "B-1", "price": 10, "category": "books"}},
        {"anonymous_id": stranger, "event_type": "page_view", "timestamp": "2025-02-02T10:00:00Z"},
        {"anonymous_id": guest, "user_id": user, "event_type": "login", "timestamp": "2025-02-03T10:00:00Z"},
    ]
    path = tmp_path / "visitors.ndjson"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    first = backfill(path)
    assert first.returncode == 0, first.stderr
    assert "3 stored" in first.stdout and "0 skipped" in first.stdout
    assert mongo.events.find_one({"anonymous_id": stranger})["user_id"] < 0
    # The line with both ids linked the guest: its purchase becomes the user's (the merge).
    wait_for(lambda: (s := summary(user)) is not None and s.purchases == 1, what="the guest purchase merged")
    assert mongo.events.count_documents({"anonymous_id": guest, "user_id": user}) == 2
    again = backfill(path)
    assert again.returncode == 0 and "0 stored" in again.stdout, again.stdout + again.stderr
    assert summary(user).purchases == 1
