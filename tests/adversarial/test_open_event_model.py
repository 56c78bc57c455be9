"""Attacks on the promises of issue 23 (docs/api.md "Anonymous visitors and identify", "Client
clocks"; docs/segment.md): what a careless client or an attacker sends, over HTTP against a real
API server process and the run's real workers and stores. Every refusal is a 4xx naming its field,
never a 500; whatever was accepted is stored and counted exactly once."""
from __future__ import annotations

import os
import threading
import uuid

import pytest
import requests
from sqlalchemy import text

from shared.infra.db import session_scope
from tests.fixtures import wait_for
from tests.helpers import signup_body


@pytest.fixture(scope="module")
def http(api, pipeline):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {os.environ['PULSE_API_KEY']}"
    session.base = api
    yield session
    session.close()


def post(http, path: str, body: dict, **kwargs) -> requests.Response:
    return http.post(f"{http.base}{path}", json=body, timeout=60, **kwargs)


def fields(answer: requests.Response) -> set[str]:
    return {problem["field"] for problem in answer.json().get("errors", [])}


def signed_up(http) -> int:
    answer = post(http, "/api/users/signup", signup_body())
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


# --------------------------------------------------------------------------- client clocks

# Instants at the ends of what Python's datetime holds: moving them to UTC, or by a sent_at
# millennia away, leaves the calendar. Each must be a 422 naming the field, never a 500.
EDGE_TIMESTAMPS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


@pytest.mark.parametrize("timestamp", EDGE_TIMESTAMPS)
def test_a_timestamp_off_the_calendar_in_utc_is_a_422(http, timestamp):
    one = post(http, "/api/events", {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": timestamp})
    assert one.status_code == 422, one.text
    assert "timestamp" in fields(one)
    batch = post(http, "/api/events/batch", {"events": [
        {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": timestamp}]})
    assert batch.status_code == 422, batch.text
    assert "events[0].timestamp" in fields(batch)


@pytest.mark.parametrize("sent_at", EDGE_TIMESTAMPS)
def test_a_sent_at_off_the_calendar_in_utc_is_a_422(http, sent_at):
    answer = post(http, "/api/events/batch", {"sent_at": sent_at, "events": [
        {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": "2026-01-01T00:00:00Z"}]})
    assert answer.status_code == 422, answer.text
    assert "sent_at" in fields(answer)


@pytest.mark.parametrize(("sent_at", "timestamp"), [
    ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),  # corrected beyond year 9999
    ("9999-12-31T00:00:00Z", "1970-01-02T00:00:00Z"),  # corrected before year 1
])
def test_a_sent_at_millennia_from_the_timestamp_is_a_422(http, sent_at, timestamp):
    answer = post(http, "/api/events/batch", {"sent_at": sent_at, "events": [
        {"event_type": "page_view", "anonymous_id": "clock-edge", "timestamp": timestamp}]})
    assert answer.status_code == 422, answer.text
    assert "events[0].timestamp" in fields(answer)


@pytest.mark.parametrize("timestamp", EDGE_TIMESTAMPS)
def test_segment_a_timestamp_off_the_calendar_is_refused_naming_it(http, timestamp):
    answer = post(http, "/v1/track", {"anonymousId": "seg-clock", "event": "Clock Edge", "timestamp": timestamp})
    assert 400 <= answer.status_code < 500, answer.text
    assert any("timestamp" in f for f in fields(answer)), answer.text
    batch = post(http, "/v1/batch", {"batch": [
        {"type": "track", "anonymousId": "seg-clock", "event": "Clock Edge", "timestamp": timestamp}]})
    # A batch answers 200 with what it refused (docs/segment.md): the rest of the batch is kept.
    assert batch.status_code == 200, batch.text
    assert [r["field"] for r in batch.json()["refused"]] == ["batch[0].timestamp"]


# --------------------------------------------------------------------------- identify, exactly once

def anonymous_purchase(anonymous_id: str, price: float = 1.0, **extra) -> dict:
    return {"event_id": extra.pop("event_id", uuid.uuid4().hex), "anonymous_id": anonymous_id,
            "event_type": "user_purchase",
            "metadata": {"product_id": "P-attack", "price": price, "category": "attack"}, **extra}


def purchases_counted(user_id: int) -> int:
    with session_scope() as session:
        row = session.execute(text("SELECT purchases FROM customer_summaries WHERE user_id = :u"),
                              {"u": user_id}).first()
    return int(row.purchases) if row else 0


def visitor_owner(anonymous_id: str) -> int | None:
    with session_scope() as session:
        return session.scalar(text("SELECT user_id FROM visitors WHERE anonymous_id = :a"), {"a": anonymous_id})


def drifted(mongo, user_id: int) -> dict[str, int]:
    """The summary tables whose rows for the user differ from a recount of its stored events."""
    from shared.pipeline import summaries

    with session_scope() as session:
        found = {d.table: d.rows for d in summaries.check(mongo, session, [user_id]) if d.rows}
        session.rollback()
    return found


def identify_at_once(http, anonymous_id: str, user_ids: list[int]) -> list[tuple[int, requests.Response]]:
    """POST /api/identify of `anonymous_id` for each user, from as many threads released together."""
    barrier = threading.Barrier(len(user_ids))
    answers: list[tuple[int, requests.Response]] = []

    def identify(user_id: int) -> None:
        barrier.wait()
        answers.append((user_id, post(http, "/api/identify", {"anonymous_id": anonymous_id, "user_id": user_id})))

    threads = [threading.Thread(target=identify, args=(u,)) for u in user_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def race_round(http, mongo, first: int, second: int, seen_before: bool) -> None:
    anonymous_id = f"race-{uuid.uuid4().hex}"
    if seen_before:
        sent = post(http, "/api/events/batch", {"events": [anonymous_purchase(anonymous_id) for _ in range(3)]})
        assert sent.status_code == 202, sent.text
        wait_for(lambda: mongo.events.count_documents({"anonymous_id": anonymous_id}) == 3, timeout=60,
                 what="the visitor's events stored")
    answers = identify_at_once(http, anonymous_id, [first, second, first, second])
    codes = sorted(a.status_code for _, a in answers)
    assert codes == [200, 200, 409, 409], [(u, a.status_code, a.text) for u, a in answers]
    winners = {u for u, a in answers if a.status_code == 200}
    assert len(winners) == 1
    winner = winners.pop()
    assert sum(a.json()["linked"] for _, a in answers if a.status_code == 200) == 1
    assert visitor_owner(anonymous_id) == winner
    if seen_before:
        wait_for(lambda: mongo.events.count_documents({"anonymous_id": anonymous_id, "user_id": winner}) == 3
                 and mongo.events.count_documents({"anonymous_id": anonymous_id}) == 3,
                 timeout=60, what="the visitor's events merged to the winner")


@pytest.mark.parametrize("seen_before", [False, True], ids=["new-visitor", "visitor-with-events"])
def test_one_visitor_identified_as_two_users_at_once_goes_to_exactly_one(http, mongo, seen_before):
    """Two tabs of two people (or an attacker) identify one anonymous id at the same instant:
    exactly one link is made, the other is a 409, and the visitor's events go to the winner only."""
    first, second = signed_up(http), signed_up(http)
    for _ in range(6):
        race_round(http, mongo, first, second, seen_before)
    wait_for(lambda: not drifted(mongo, first) and not drifted(mongo, second), timeout=60, what="summaries settled")


def test_identify_racing_the_visitors_stream_counts_every_event_once(http, mongo):
    """A visitor keeps sending purchases (anonymous only, and some carrying both ids) while it is
    identified mid-stream: at the end every purchase is the user's, counted once, and no document
    of the visitor is left under a negative id."""
    user = signed_up(http)
    anonymous_id = f"stream-{uuid.uuid4().hex}"
    batches, per_batch = 24, 20
    started = threading.Event()
    failures: list[str] = []

    def stream() -> None:
        for number in range(batches):
            events = [anonymous_purchase(anonymous_id) for _ in range(per_batch)]
            if number % 6 == 5:  # now and then the tracker knows the user too
                events[0] = {**events[0], "user_id": user}
            answer = post(http, "/api/events/batch", {"events": events})
            if answer.status_code != 202:
                failures.append(answer.text)
            if number == 3:
                started.set()

    sender = threading.Thread(target=stream)
    sender.start()
    assert started.wait(60)
    identified = post(http, "/api/identify", {"anonymous_id": anonymous_id, "user_id": user})
    sender.join(120)
    assert identified.status_code == 200, identified.text
    assert not failures, failures
    total = batches * per_batch
    # The merge deletes a page's negative-id documents after its copies commit: wait for both.
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anonymous_id, "user_id": user}) == total
             and purchases_counted(user) == total
             and mongo.events.count_documents({"anonymous_id": anonymous_id, "user_id": {"$lt": 0}}) == 0,
             timeout=120, what=f"{total} purchases the user's, counted, none left under the visitor")
    assert purchases_counted(user) == total
    assert not drifted(mongo, user)


# --------------------------------------------------------------------------- odd ids, never a 500

ODD_ANONYMOUS_IDS = ["12", "-1", "0", "1e3", "١٢", "x" * 200, "émilie 🍪", "a\u2028b", "$where", "a.b",
                     "  padded  ", "null", "true", "[]"]


@pytest.mark.parametrize("anonymous_id", ODD_ANONYMOUS_IDS)
def test_an_odd_but_printable_anonymous_id_is_its_own_visitor(http, mongo, anonymous_id):
    """An anonymous id that looks like a number, a user id, an operator or a path is just text: its
    events are stored under its own visitor (never as user 12), identify links it, and it merges."""
    stem = f"{anonymous_id}"[:150] + uuid.uuid4().hex[:8] if len(anonymous_id) > 190 else anonymous_id
    event_id = uuid.uuid4().hex
    sent = post(http, "/api/events/batch", {"events": [anonymous_purchase(stem, event_id=event_id)]})
    assert sent.status_code == 202, sent.text
    stripped = stem.strip()
    wait_for(lambda: mongo.events.find_one({"event_id": event_id}), timeout=60, what="stored")
    stored = mongo.events.find_one({"event_id": event_id})
    assert stored["anonymous_id"] == stripped
    assert stored["user_id"] < 0 or visitor_owner(stripped) == stored["user_id"]


@pytest.mark.parametrize("anonymous_id", ["", "   ", "x" * 201, "a\x00b", "a\nb", "\x7f", "a\tb"])
def test_an_unusable_anonymous_id_is_a_422_naming_it(http, anonymous_id):
    user = signed_up(http)
    for path, body, where in [
        ("/api/events", {"event_type": "page_view", "anonymous_id": anonymous_id}, "anonymous_id"),
        ("/api/events/batch", {"events": [{"event_type": "page_view", "anonymous_id": anonymous_id}]},
         "events[0].anonymous_id"),
        ("/api/identify", {"anonymous_id": anonymous_id, "user_id": user}, "anonymous_id"),
    ]:
        answer = post(http, path, body)
        assert answer.status_code == 422, (path, answer.text)
        assert any(where in f for f in fields(answer)), (path, answer.text)


@pytest.mark.parametrize("user_id", ["0", "-1", "1e3", "١٢", "12.0", "0x1f", 2**31, 0, -5, 12.5, True, "99999999999"])
def test_segment_a_user_id_that_is_not_a_pulse_id_is_refused_naming_userid(http, user_id):
    answer = post(http, "/v1/track", {"userId": user_id, "event": "Odd User"})
    assert answer.status_code == 422, answer.text
    assert fields(answer) == {"userId"}, answer.text


def test_segment_a_batch_repeating_message_ids_with_other_content_stores_the_first_only(http, mongo):
    user = signed_up(http)
    message_id = f"m-{uuid.uuid4().hex}"
    batch = [{"type": "track", "userId": str(user), "event": "Repeat", "messageId": message_id,
              "properties": {"n": n}} for n in range(100)]
    answer = post(http, "/v1/batch", {"batch": batch})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1, answer.text
    assert len(answer.json()["refused"]) == 99
    wait_for(lambda: mongo.events.find_one({"user_id": user, "event_id": message_id}), timeout=60, what="stored")
    assert [d["metadata"] for d in mongo.events.find({"user_id": user, "event_id": message_id})] == [{"n": 0}]


@pytest.mark.parametrize("metadata", [
    {"$where": "1"}, {"a.b": 1}, {"a": {"$gt": 1}}, {"a": {"b.c": 1}}, {"": 1}, {"k" * 65: 1},
    {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, {f"k{i}": i for i in range(51)},
    {"big": "x" * 33_000}, {"a\x00": 1},
], ids=["dollar", "dot", "nested-dollar", "nested-dot", "empty", "long-key", "depth-6", "51-keys", "over-32k", "nul"])
def test_custom_metadata_that_could_steer_mongodb_is_a_422(http, metadata):
    answer = post(http, "/api/events/batch", {"events": [
        {"event_type": "odd_metadata", "anonymous_id": "meta-attack", "metadata": metadata}]})
    assert answer.status_code == 422, answer.text
    assert any(f.startswith("events[0].metadata") for f in fields(answer)), answer.text


def test_custom_metadata_at_the_limits_is_stored_as_sent(http, mongo):
    event_id = uuid.uuid4().hex
    nested = {"a": {"b": {"c": {"d": {"e": 1}}}}, "arr": [[1] * 1000], "long": list(range(1000)), "u": "é🍪"}
    answer = post(http, "/api/events/batch", {"events": [
        {"event_id": event_id, "event_type": "odd_metadata", "anonymous_id": "meta-limits", "metadata": nested}]})
    assert answer.status_code == 202, answer.text
    wait_for(lambda: mongo.events.find_one({"event_id": event_id}), timeout=60, what="stored")
    assert mongo.events.find_one({"event_id": event_id})["metadata"] == nested


# --------------------------------------------------------------------------- the merge, killed

MANY = 2_500  # three merge pages of 1,000


def visitor_with_purchases(http, mongo, count: int) -> tuple[str, int]:
    """A visitor with `count` stored purchases, under its negative id: (anonymous id, visitor id)."""
    anonymous_id = f"many-{uuid.uuid4().hex}"
    for start in range(0, count, 1000):
        sent = post(http, "/api/events/batch", {"events": [
            anonymous_purchase(anonymous_id, event_id=f"e{n:06d}", timestamp="2026-05-01T10:00:00+00:00")
            for n in range(start, min(start + 1000, count))]})
        assert sent.status_code == 202, sent.text
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anonymous_id, "user_id": {"$lt": 0}}) == count,
             timeout=120, what="the visitor's events stored")
    with session_scope() as session:
        visitor_id = int(session.scalar(text("SELECT id FROM visitors WHERE anonymous_id = :a"), {"a": anonymous_id}))
    return anonymous_id, visitor_id


def link_without_merge(anonymous_id: str, user_id: int) -> None:
    """The link as identify commits it, without its outbox row: the test delivers the merge itself,
    to a worker it can kill (the run's workers never see it)."""
    with session_scope() as session:
        session.execute(text("UPDATE visitors SET user_id = :u, linked_at = now() WHERE anonymous_id = :a"),
                        {"u": user_id, "a": anonymous_id})


def blocked_counting(observer) -> bool:
    return observer.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND query LIKE 'INSERT INTO applied_batches%%'").fetchone()[0] >= 1


@pytest.fixture()
def killable():
    import psycopg
    from sqlalchemy.engine import make_url

    from shared.contracts.settings import Settings
    from shared.infra.celery_app import create_celery_app
    from tests.conftest import TEST_ENV
    from tests.helpers import KillableWorker

    pg = make_url(TEST_ENV["DATABASE_URL"]).set(drivername="postgresql").render_as_string(hide_password=False)
    publisher = create_celery_app("pulse-test-merge-kill", settings=Settings(queue_prefix=KillableWorker.prefix))
    worker = KillableWorker()
    try:
        yield worker, publisher, lambda: psycopg.connect(pg)
    finally:
        worker.stop()


def test_a_merge_of_several_pages_killed_and_redelivered_counts_each_event_once(http, mongo, killable):
    """The worker merging a visitor of 2,500 events is SIGKILLed after storing the user's copies of
    the first page, before counting them; the broker redelivers the merge, and later a second copy of
    the message arrives too. Every purchase ends the user's, counted once; none is left under the
    visitor's negative id."""
    from shared.contracts.topology import MERGE_VISITOR, STORE_EVENTS

    worker, publisher, connect = killable
    user = signed_up(http)
    anonymous_id, visitor_id = visitor_with_purchases(http, mongo, MANY)
    link_without_merge(anonymous_id, user)
    with connect() as blocker, connect() as observer:
        blocker.execute("LOCK TABLE applied_batches IN ACCESS EXCLUSIVE MODE")
        worker.start(publisher)
        try:
            publisher.send_task(MERGE_VISITOR, kwargs={"visitor_id": visitor_id, "user_id": user})
            wait_for(lambda: mongo.events.count_documents({"user_id": user, "anonymous_id": anonymous_id}) == 1000
                     and blocked_counting(observer), timeout=60, what="the first page's copies stored, not counted")
            worker.kill()
        finally:
            blocker.rollback()
    assert purchases_counted(user) == 0
    worker.start(publisher)  # the broker redelivers the unacknowledged merge
    wait_for(lambda: purchases_counted(user) == MANY, timeout=120, what="the redelivered merge counted")
    publisher.send_task(MERGE_VISITOR, kwargs={"visitor_id": visitor_id, "user_id": user})  # a second delivery
    marker = {"event_id": "marker", "user_id": user, "event_type": "user_purchase",
              "timestamp": "2026-05-02T10:00:00+00:00", "received_at": None,
              "metadata": {"product_id": "P-attack", "price": 1.0, "category": "attack"}, "geo": None}
    publisher.send_task(STORE_EVENTS, kwargs={"events": [marker]})  # behind it, in the same queue
    wait_for(lambda: purchases_counted(user) == MANY + 1, timeout=60, what="the marker counted")
    assert mongo.events.count_documents({"user_id": -visitor_id}) == 0
    assert mongo.events.count_documents({"user_id": user, "anonymous_id": anonymous_id}) == MANY
    assert not drifted(mongo, user)


def test_erasing_the_user_while_its_visitors_merge_is_in_flight_leaves_nothing(http, mongo, killable):
    """The erasure commits while a merge holds the user's copies of a page, uncounted: once both are
    done nothing of the person is left, neither under the user nor under the visitor's negative id,
    nor a `visitors` row."""
    from shared.contracts.topology import MERGE_VISITOR

    worker, publisher, connect = killable
    user = signed_up(http)
    anonymous_id, visitor_id = visitor_with_purchases(http, mongo, 1_500)
    link_without_merge(anonymous_id, user)
    with connect() as blocker, connect() as observer:
        blocker.execute("LOCK TABLE applied_batches IN ACCESS EXCLUSIVE MODE")
        worker.start(publisher)
        publisher.send_task(MERGE_VISITOR, kwargs={"visitor_id": visitor_id, "user_id": user})
        try:
            wait_for(lambda: mongo.events.count_documents({"user_id": user, "anonymous_id": anonymous_id}) == 1000
                     and blocked_counting(observer), timeout=60, what="the merge's first page stored, not counted")
            erased = http.delete(f"{http.base}/api/users/{user}", timeout=60)
        finally:
            blocker.rollback()
    assert erased.status_code in (200, 202, 204), erased.text
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anonymous_id}) == 0
             and mongo.events.count_documents({"user_id": user}) == 0, timeout=120,
             what="every event of the person gone")
    assert visitor_owner(anonymous_id) is None
    with session_scope() as session:
        assert session.scalar(text("SELECT count(*) FROM visitors WHERE anonymous_id = :a"), {"a": anonymous_id}) == 0
    assert purchases_counted(user) == 0


# --------------------------------------------------------------------------- the tracking plan's violations

def violation_reasons(http, event_type: str) -> list[str]:
    answer = http.get(f"{http.base}/api/tracking-plan/violations", timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    rows = body if isinstance(body, list) else next(v for v in body.values() if isinstance(v, list))
    return [row["reason"] for row in rows if row["event_type"] == event_type]


def test_violation_reasons_do_not_multiply_with_the_keys_a_client_makes_up(http):
    """docs/tracking-plan.md: a reason is "never a value a client sent, so rows do not multiply with
    traffic". A plan whose properties are open (`additionalProperties`, `patternProperties`) puts
    the client's own keys on the error path: a key per person (a name, an e-mail turned into a key)
    or a key per request would make a row per key, kept for ever and not erasable."""
    event_type = f"open_{uuid.uuid4().hex[:8]}"
    put = http.put(f"{http.base}/api/tracking-plan/event-types/{event_type}", timeout=60, json={
        "schema": {"type": "object", "additionalProperties": {"type": "integer"},
                   "patternProperties": {"^p_": {"type": "object", "additionalProperties": {"type": "integer"}}}},
        "on_violation": "flag"})
    assert put.status_code in (200, 201), put.text
    events = [{"event_type": event_type, "anonymous_id": f"keys-{n}",
               "metadata": {f"ivan_petrov_{n}_example_com": "x", "p_x": {f"olena_{n}": "y"}}} for n in range(20)]
    sent = post(http, "/api/events/batch", {"events": events})
    assert sent.status_code == 202, sent.text
    reasons = violation_reasons(http, event_type)
    assert len(reasons) <= 2, reasons
    assert sorted(reasons) == ["metadata.*.*: type", "metadata.*: type"], reasons


def test_an_erased_persons_visitor_leaves_no_example_of_its_violations(http, mongo):
    """A visitor's flagged event quotes what it sent in the violation's example; the visitor is
    identified, the user erased: the example must go with the person (docs/erasure.md,
    docs/tracking-plan.md), as must every event of the visitor."""
    event_type = f"quote_{uuid.uuid4().hex[:8]}"
    put = http.put(f"{http.base}/api/tracking-plan/event-types/{event_type}", timeout=60, json={
        "schema": {"type": "object", "properties": {"code": {"type": "integer"}}}, "on_violation": "flag"})
    assert put.status_code in (200, 201), put.text
    secret = f"olena.{uuid.uuid4().hex[:6]}@example.com"
    anonymous_id = f"quoted-{uuid.uuid4().hex}"
    sent = post(http, "/api/events/batch", {"events": [
        {"event_type": event_type, "anonymous_id": anonymous_id, "metadata": {"code": secret}}]})
    assert sent.status_code == 202, sent.text
    wait_for(lambda: mongo.events.find_one({"anonymous_id": anonymous_id}), timeout=60, what="stored")
    assert secret in str(http.get(f"{http.base}/api/tracking-plan/violations", timeout=60).json())
    user = signed_up(http)
    assert post(http, "/api/identify", {"anonymous_id": anonymous_id, "user_id": user}).status_code == 200
    wait_for(lambda: mongo.events.find_one({"anonymous_id": anonymous_id, "user_id": user}), timeout=60,
             what="merged")
    erased = http.delete(f"{http.base}/api/users/{user}", timeout=60)
    assert erased.status_code in (200, 202, 204), erased.text
    wait_for(lambda: secret not in str(http.get(f"{http.base}/api/tracking-plan/violations", timeout=60).json())
             and not mongo.events.find_one({"anonymous_id": anonymous_id}), timeout=60,
             what="the example and the events erased")


# --------------------------------------------------------------------------- Segment's /v1, the edges

def key_with(scopes: list[str]) -> tuple[str, str]:
    from shared.infra import api_keys

    with session_scope() as session:
        created, secret = api_keys.create(session, scopes, name="attack")
        return str(getattr(created, "id", created)), secret


def test_segment_basic_auth_with_a_read_key_or_a_revoked_key_stores_nothing(api, pipeline, http, mongo):
    user = signed_up(http)
    _, read_key = key_with(["read"])
    key_id, ingest_key = key_with(["ingest"])
    message_id = f"m-{uuid.uuid4().hex}"
    message = {"userId": str(user), "event": "Scoped", "messageId": message_id}
    read = requests.post(f"{api}/v1/track", auth=(read_key, ""), json=message, timeout=30)
    assert read.status_code == 403, read.text
    assert read.json().get("code"), read.text
    revoked = http.delete(f"{http.base}/api/keys/{key_id}", timeout=30)
    assert revoked.status_code in (200, 204), revoked.text
    after = requests.post(f"{api}/v1/batch", auth=(ingest_key, ""), json={"batch": [message]}, timeout=30)
    assert after.status_code == 401, after.text
    in_body = requests.post(f"{api}/v1/batch", json={"batch": [message], "writeKey": ingest_key}, timeout=30)
    assert in_body.status_code == 401, in_body.text
    assert mongo.events.find_one({"event_id": message_id}) is None


def test_segment_text_plain_with_a_bom_is_read_as_json(api, pipeline, http, mongo):
    """analytics.js sends text/plain; a proxy or an old client may prefix a UTF-8 BOM: read it, or
    refuse it as a 400, never a 500."""
    user = signed_up(http)
    _, key = key_with(["ingest"])
    message_id = f"m-{uuid.uuid4().hex}"
    body = ("\ufeff" + f'{{"userId": "{user}", "event": "Bom", "messageId": "{message_id}"}}').encode()
    answer = requests.post(f"{api}/v1/t", auth=(key, ""), data=body, timeout=30,
                           headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert answer.status_code in (200, 400), answer.text
    latin = requests.post(f"{api}/v1/t", auth=(key, ""), data=b'{"userId": "\xff\xfe"}', timeout=30,
                          headers={"Content-Type": "text/plain"})
    assert 400 <= latin.status_code < 500, latin.text


# --------------------------------------------------------------------------- the merge is not an ingestion

def test_a_merge_is_not_ingested_again_in_the_lag_histogram_or_the_stored_total(http, mongo):
    """docs/metrics.md: the ingestion lag is, per stored event, the time from the API receiving it to
    the worker storing it, and `_count` grows as `pulse_events_stored_total`. A visitor's events are
    observed when first stored; the merge that moves them to the user (maybe days later, at the
    signup) must not observe them again: 1,000 events of a week-old visitor would each add a lag of
    a week, and the stored total would count them twice."""
    from shared.infra import counters, ingestion_lag

    user = signed_up(http)
    anonymous_id = f"lag-{uuid.uuid4().hex}"
    sent = post(http, "/api/events/batch", {"events": [anonymous_purchase(anonymous_id) for _ in range(40)]})
    assert sent.status_code == 202, sent.text
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anonymous_id}) == 40
             and mongo.events.find_one({"user_id": user, "event_type": "user_created"})
             and purchases_counted(user) == 0 and not drifted(mongo, user), timeout=60, what="stored")

    def totals() -> tuple[int, int]:
        return ingestion_lag.read().count, counters.read().get(counters.EVENTS_STORED, 0)

    before = totals()
    assert post(http, "/api/identify", {"anonymous_id": anonymous_id, "user_id": user}).status_code == 200
    wait_for(lambda: purchases_counted(user) == 40, timeout=60, what="merged and counted")
    assert totals() == before


def test_one_event_id_from_a_visitor_its_user_and_a_second_device_is_one_event(http, mongo):
    """A tracker counting its own ids (`order-1` on every device) sends `order-1` as a visitor, as the
    user, and from a second device; both devices are identified to the user. The user has one
    `order-1`, counted once, and nothing is left under either visitor's negative id."""
    user = signed_up(http)
    phone, laptop = f"phone-{uuid.uuid4().hex}", f"laptop-{uuid.uuid4().hex}"
    for body in ({"events": [anonymous_purchase(phone, 100.0, event_id="order-1")]},
                 {"events": [anonymous_purchase(laptop, 7.0, event_id="order-1")]},
                 {"events": [{**anonymous_purchase(phone, 5.0, event_id="order-1"), "anonymous_id": None}]}):
        events = [{k: v for k, v in e.items() if v is not None} for e in body["events"]]
        if "anonymous_id" not in events[0]:
            events[0]["user_id"] = user
        answer = post(http, "/api/events/batch", {"events": events})
        assert answer.status_code == 202, answer.text
    wait_for(lambda: mongo.events.count_documents({"event_id": "order-1", "$or": [
        {"anonymous_id": {"$in": [phone, laptop]}}, {"user_id": user}]}) == 3 and purchases_counted(user) == 1,
        timeout=60, what="all three stored, the user's counted")
    for anonymous_id in (phone, laptop):
        assert post(http, "/api/identify", {"anonymous_id": anonymous_id, "user_id": user}).status_code == 200
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": {"$in": [phone, laptop]},
                                                   "user_id": {"$lt": 0}}) == 0,
             timeout=60, what="both visitors merged")
    assert mongo.events.count_documents({"user_id": user, "event_id": "order-1"}) == 1
    assert purchases_counted(user) == 1
    wait_for(lambda: not drifted(mongo, user), timeout=30, what="no drift")


def test_a_batch_whose_visitor_row_is_erased_between_ensure_and_lock_is_stored(mongo, services, monkeypatch):
    """store_batch makes sure of a visitor's row (one transaction), then locks it (the next): an
    erasure of the visitor's user deleting the row in between (docs/erasure.md, step 1) left the
    batch without it: a KeyError, no transient error, so the whole message was dead-lettered and
    another customer's purchase in it, answered 202, never stored. (In process: the instant between
    the two transactions cannot be hit over HTTP.) The batch is stored; the anonymous id is a new,
    unlinked visitor, as docs/api.md says of an id sent again after the erasure."""
    from datetime import UTC, datetime

    from services.worker.storage import store_batch
    from shared.pipeline import visitors

    anonymous_id = f"erased-between-{uuid.uuid4().hex}"
    with session_scope() as session:
        visitors.ensure(session, [anonymous_id])
    real_lock, erased = visitors.lock, []

    def lock_after_erasure(session, anonymous_ids, for_update=False):
        if not erased:
            erased.append(True)
            with session_scope() as other:
                other.execute(text("DELETE FROM visitors WHERE anonymous_id = :a"), {"a": anonymous_id})
        return real_lock(session, anonymous_ids, for_update)

    monkeypatch.setattr(visitors, "lock", lock_after_erasure)
    now = datetime.now(UTC)
    order = f"order-{uuid.uuid4().hex}"
    docs = [{"event_id": uuid.uuid4().hex, "user_id": None, "anonymous_id": anonymous_id, "event_type": "page_view",
             "timestamp": now, "metadata": {}, "received_at": now},
            {"event_id": order, "user_id": -999_999_999, "event_type": "page_view", "timestamp": now,
             "metadata": {}, "received_at": now}]
    stored = store_batch(mongo, f"erased-between-{uuid.uuid4().hex}", docs, lambda _delay: None)
    assert stored.inserted == 2
    assert erased
    document = mongo.events.find_one({"anonymous_id": anonymous_id})
    assert document is not None and document["user_id"] < 0
    assert visitor_owner(anonymous_id) is None
