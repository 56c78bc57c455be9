"""Benchmark: identify costs the visitor's events, never the store's (issue 23).

On a Postgres and a SecantusDB of its own (scripts.private_servers; the machine's Redis under a
prefix of its own), for each store size (other people's events: 100,000 and 1,000,000 by default)
and each visitor size (10, 1,000 and 10,000 events, one in ten a purchase), a fresh visitor whose
events are stored as the worker stores an unidentified visitor's (`user_id = -visitor id`) is
identified: timed, the link as POST /api/identify commits it (shared.pipeline.visitors.link, with
the merge's outbox row), and the merge the worker then runs (services.worker.merge.merge_visitor:
pages of 1,000 through the one storage path, summaries included). Checked after each: every event
is the user's and counted once.

Printed: each time, how it grows with the visitor's events (10 → 10,000) and how it grows with the
store (smallest → largest). Target: the second ratio stays near 1 (the merge reads the visitor's
events through the unique index `(user_id, event_id)`), the first grows with the events.
`python bench/identify_scaling.py [--stored 100000,1000000] [--visitor-events 10,1000,10000]`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.private_servers import PrivateMongo, PrivatePostgres  # noqa: E402

OTHER_USERS = 1000
LINE = "=" * 78
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def prepare_postgres(engine) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE users, addresses, cities, countries, visitors RESTART IDENTITY CASCADE"))
        conn.execute(text("INSERT INTO countries (id, code, name) VALUES (1, 'EE', 'Estonia')"))
        conn.execute(text("INSERT INTO cities (id, name, country_id) VALUES (1, 'Tallinn', 1)"))
        conn.execute(text("INSERT INTO addresses (id, street, city_id) VALUES (1, 'Bench Street', 1)"))
        conn.execute(text("INSERT INTO users (username, email, full_name, address_id) SELECT 'u' || g, "
                          "'u' || g || '@bench.example', 'Bench User', 1 FROM generate_series(1, :n) g"),
                     {"n": OTHER_USERS})


def event(event_id: str, user_id: int, i: int, anonymous_id: str | None = None) -> dict:
    doc: dict = {"event_id": event_id, "user_id": user_id, "timestamp": EPOCH + timedelta(minutes=i),
                 "batch_id": "bench", "received_at": EPOCH}
    if i % 10 == 0:
        doc.update(event_type="user_purchase", metadata={"product_id": "P", "price": 10.0, "category": "books"})
    else:
        doc.update(event_type="page_view", metadata={"page": "/"})
    if anonymous_id is not None:
        doc["anonymous_id"] = anonymous_id
    return doc


def grow_store(db, target: int) -> None:
    """Other people's events up to `target` in all (users 1..OTHER_USERS)."""
    have = db.events.estimated_document_count()
    batch = []
    for i in range(have, target):
        batch.append(event(f"o{i}", 1 + i % OTHER_USERS, i))
        if len(batch) >= 20000:
            db.events.insert_many(batch, ordered=False)
            batch = []
    if batch:
        db.events.insert_many(batch, ordered=False)


def new_user(engine) -> int:
    from sqlalchemy import text

    with engine.begin() as conn:
        name = uuid.uuid4().hex[:12]
        return int(conn.execute(text("INSERT INTO users (username, email, full_name, address_id) VALUES "
                                     "(:u, :e, 'Bench Visitor', 1) RETURNING id"),
                                {"u": name, "e": f"{name}@bench.example"}).scalar_one())


def stored_visitor(engine, db, events: int) -> tuple[str, int]:
    """A visitor with `events` events stored as the worker stores an unidentified visitor's."""
    from sqlalchemy import text

    anonymous_id = f"anon-{uuid.uuid4().hex}"
    with engine.begin() as conn:
        visitor_id = int(conn.execute(text("INSERT INTO visitors (anonymous_id) VALUES (:a) RETURNING id"),
                                      {"a": anonymous_id}).scalar_one())
    docs = [event(f"v{i:06d}", -visitor_id, i, anonymous_id) for i in range(events)]
    for start in range(0, len(docs), 20000):
        db.events.insert_many(docs[start:start + 20000], ordered=False)
    return anonymous_id, visitor_id


def identify(engine, db, events: int) -> tuple[float, float]:
    from sqlalchemy import text

    from services.worker.merge import merge_visitor
    from shared.infra.db import session_scope
    from shared.pipeline import visitors

    user_id = new_user(engine)
    anonymous_id, visitor_id = stored_visitor(engine, db, events)
    started = time.perf_counter()
    with session_scope() as session:
        assert visitors.link(session, anonymous_id, user_id)
    linked = time.perf_counter()
    merge_visitor(db, visitor_id, user_id, lambda _delay: None)
    merged = time.perf_counter()
    assert db.events.count_documents({"user_id": -visitor_id}) == 0
    assert db.events.count_documents({"user_id": user_id}) == events
    with engine.connect() as conn:
        purchases = conn.execute(text("SELECT purchases FROM customer_summaries WHERE user_id = :u"),
                                 {"u": user_id}).scalar()
    assert purchases == (events + 9) // 10, purchases
    return linked - started, merged - linked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", default="100000,1000000", help="other people's events, ascending")
    parser.add_argument("--visitor-events", default="10,1000,10000")
    parser.add_argument("--repeat", type=int, default=2, help="identifies per cell; the best is printed")
    args = parser.parse_args()
    stores = [int(s) for s in args.stored.split(",")]
    sizes = [int(s) for s in args.visitor_events.split(",")]

    postgres, mongo = PrivatePostgres(), PrivateMongo()
    try:
        postgres.start()
        mongo.start()
        os.environ.update({"DATABASE_URL": f"{postgres.url}/pulse", "MONGO_URI": mongo.mongo_uri("pulse"),
                           "CACHE_PREFIX": f"pulse-bench-{uuid.uuid4().hex[:8]}:", "LOG_LEVEL": "WARNING"})
        from shared.infra.db import get_engine
        from shared.infra.migrate import upgrade
        from shared.infra.mongo import ensure_indexes, get_database

        upgrade(os.environ["DATABASE_URL"])
        engine, db = get_engine(), get_database()
        ensure_indexes(db)
        db.events.delete_many({})
        prepare_postgres(engine)
        print(LINE)
        print("identify (link + merge) of one visitor, by the visitor's events and the store's size")
        print(LINE)
        results: dict[tuple[int, int], float] = {}
        for stored in stores:
            grow_store(db, stored)
            for events in sizes:
                runs = [identify(engine, db, events) for _ in range(args.repeat)]
                link, merge = min(runs, key=lambda r: r[0] + r[1])
                results[(stored, events)] = link + merge
                print(f"{stored:>10,} stored   visitor {events:>6,} events   link {link * 1000:7.1f} ms   "
                      f"merge {merge * 1000:9.1f} ms   total {(link + merge) * 1000:9.1f} ms")
        print(LINE)
        for stored in stores:
            first, last = results[(stored, sizes[0])], results[(stored, sizes[-1])]
            print(f"at {stored:>10,} stored: visitor events x{sizes[-1] / sizes[0]:,.0f} -> time x{last / first:,.1f}")
        if len(stores) > 1:
            for events in sizes:
                small, large = results[(stores[0], events)], results[(stores[-1], events)]
                grown = stores[-1] / stores[0]
                print(f"visitor of {events:>6,} events: store x{grown:,.0f} -> time x{large / small:.2f}")
    finally:
        mongo.remove()
        postgres.remove()


if __name__ == "__main__":
    main()
