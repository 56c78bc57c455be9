"""Benchmark: the erasure sweep (shared.pipeline.erasure.sweep_page) does not scan `events`.

On a Postgres and a SecantusDB of its own (scripts.private_servers; the machine's Redis under a
prefix of its own), for each size: USERS users in Postgres with that many events each in MongoDB,
1% of the users then deleted from Postgres behind Pulse's back. Timed, per size:

- the sweep's full cycle once it has forgotten them (its steady state: what every beat run costs,
  summed over every page), and
- the baseline, same run, same data: the scan a reconciliation without the sweep's design would
  run, `distinct("user_id")` over all of `events` minus the ids Postgres knows.

Printed: both, their ratio, and how each grows from the fewest events to the most. Target: the
sweep's cost stays flat as events grow (it asks MongoDB about missing ids only, through
`ix_user_time`), the scan's grows with them. `python bench/erasure_sweep.py [--events-per-user 5,50]`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.private_servers import PrivateMongo, PrivatePostgres  # noqa: E402

USERS = 5000
LINE = "=" * 78


def populate(n: int, per_user: int, db, engine) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE users, addresses, cities, countries, sweep_cursors RESTART IDENTITY CASCADE"))
        conn.execute(text("INSERT INTO countries (id, code, name) VALUES (1, 'EE', 'Estonia')"))
        conn.execute(text("INSERT INTO cities (id, name, country_id) VALUES (1, 'Tallinn', 1)"))
        conn.execute(text("INSERT INTO addresses (id, street, city_id) VALUES (1, 'Bench Street', 1)"))
        conn.execute(text("INSERT INTO users (username, email, full_name, address_id) SELECT 'u' || g, "
                          "'u' || g || '@bench.example', 'Bench User', 1 FROM generate_series(1, :n) g"), {"n": n})
    db.events.delete_many({})
    batch = []
    for user_id in range(1, n + 1):
        for _ in range(per_user):
            batch.append({"event_id": uuid.uuid4().hex, "user_id": user_id, "event_type": "page_view",
                          "timestamp": time.time(), "batch_id": "bench"})
        if len(batch) >= 20000:
            db.events.insert_many(batch, ordered=False)
            batch = []
    if batch:
        db.events.insert_many(batch, ordered=False)
    with engine.begin() as conn:  # 1% deleted by hand: no erasure, no message
        conn.execute(text("DELETE FROM users WHERE id % 100 = 7"))


def sweep_cycle(db, page: int) -> tuple[float, int]:
    from sqlalchemy import text

    from shared.infra.db import session_scope
    from shared.pipeline import erasure

    started, forgotten = time.perf_counter(), 0
    while True:
        forgotten += erasure.sweep_page(db, page)["forgotten"]
        with session_scope() as session:
            if session.scalar(text("SELECT next_id FROM sweep_cursors WHERE name = 'erasure'")) == 1:
                return time.perf_counter() - started, forgotten


def scan(db, engine) -> tuple[float, int]:
    from sqlalchemy import text

    started = time.perf_counter()
    in_events = set(db.events.distinct("user_id"))
    with engine.connect() as conn:
        known = set(conn.execute(text("SELECT id FROM users")).scalars())
    return time.perf_counter() - started, len(in_events - known)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-user", default="5,50")
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--page", type=int, default=10000, help="ERASURE_SWEEP_PAGE")
    args = parser.parse_args()
    sizes = [int(s) for s in args.events_per_user.split(",")]
    n = args.users

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
        print(LINE)
        print(f"erasure sweep vs a scan of events ({n:,} users, 1% of them deleted by hand)")
        print(LINE)
        results = []
        for per_user in sizes:
            populate(n, per_user, db, engine)
            _, forgotten = sweep_cycle(db, args.page)  # the first cycle forgets them
            assert forgotten == n // 100 + (1 if n % 100 >= 7 else 0), forgotten
            # Best of three each: the first cycle of a size also warms connections and caches.
            steady = min(sweep_cycle(db, args.page)[0] for _ in range(3))
            scans = [scan(db, engine) for _ in range(3)]
            assert all(found == 0 for _, found in scans)
            scanned = min(seconds for seconds, _ in scans)
            results.append((per_user, steady, scanned))
            print(f"{n * per_user:>10,} events   sweep cycle {steady * 1000:9.1f} ms   scan {scanned * 1000:9.1f} ms"
                  f"   sweep/scan {steady / scanned:5.2f}x")
        if len(results) > 1:
            (e0, s0, c0), (e1, s1, c1) = results[0], results[-1]
            print(LINE)
            print(f"events x{e1 / e0:.0f}: sweep x{s1 / s0:.2f}, scan x{c1 / c0:.2f} "
                  f"(one beat run checks at most {args.page:,} ids)")
    finally:
        mongo.remove()
        postgres.remove()


if __name__ == "__main__":
    main()
