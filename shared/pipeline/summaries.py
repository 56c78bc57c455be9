"""Per-customer summaries of MongoDB `events`, kept in Postgres exactly once per event batch.

What the worker adds for every batch it stores, in ONE transaction:

* `applied_batches`: the batch id. Inserting it first makes the transaction a no-op for a batch
  that was applied before, so a redelivered message adds nothing;
* `activity_days`: events per user and UTC day (engagement; shared.pipeline.activity);
* `purchase_days`: purchases and spend per customer and UTC day (BG/NBD counts purchase days);
* `customer_summaries`: one row per customer: first and last purchase, purchase days,
  purchases, spend, spend on the first purchase day: everything the rules, BG/NBD, Gamma-Gamma
  and RFM read about one customer;
* `customer_categories`: purchases and spend per customer and category (recommendations);
* `category_sales`: purchases and spend per category (top categories without a scan).

Which events a batch adds is decided by MongoDB, the source of truth: every event document
carries the id of the batch that first stored it (`batch_id`), and a batch adds exactly the events
it stored: those its insert stored, plus those an earlier delivery of the same message stored
before the worker died (the insert now reports them as duplicates; their `batch_id`, identity
`(user_id, event_id)` and content tell they are ours, and copies inside one batch were collapsed
before the insert: services.worker.storage.insert_events). So a worker killed between storing the events and this
transaction leaves
nothing uncounted: the redelivery finds the events stored, sees they are its own, and applies
them. An event re-sent in another message belongs to the batch that stored it first.

Money is `numeric`, summed by Postgres from the individual prices, so the totals do not depend on
the order in which batches arrive and a recount gives exactly the same values.

`person_events` (shared.pipeline.person_events) is kept in the same transaction, for users' and
visitors' events alike (every other table is of users).

`pulse summaries rebuild` recounts every table from MongoDB `events` (after an upgrade,
or to repair); `pulse summaries rebuild --check` recounts into temporary tables and
reports every row that differs (exit status 1 on drift). Both stream the events once and let Postgres group
them with the same SQL as the incremental path. Run them on a quiet stack: a batch stored while
the recount reads may be counted twice or not at all.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pymongo.database import Database
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.contracts.event_time import to_milliseconds
from shared.infra.db import rowcount
from shared.infra.mongo import EVENTS, Document
from shared.pipeline import activity, person_events, rescore

PURCHASE = "user_purchase"


# ----------------------------------------------------------------------------- the batch path

# The batch's users, locked against erasure (shared.pipeline.erasure) for the rest of the transaction: an
# erasure that already holds one is waited for, and its user is then gone from every later
# statement (each reads what was committed when it began), so no counter is written for a user
# whose row is deleted meanwhile, and an erasure that comes later waits for this batch to commit.
_LOCK_USERS = text("SELECT id FROM users WHERE id = ANY(CAST(:ids AS integer[])) ORDER BY id FOR KEY SHARE")

_CLAIM = text(
    "INSERT INTO applied_batches (batch_id, events) VALUES (:batch_id, :events) "
    "ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id"
)

# The statements below are joined from constants ("".join, not an f-string, so that bandit's
# SQL-injection check, which cannot tell constants from input, has nothing to report).
# One row per purchase of the batch, priced as Postgres reads a float8 (shortest exact decimal),
# for users that exist (an event of an erased user is not an error, and adds nothing).
_WITH_PURCHASES = """
    WITH purchases AS (
        SELECT p.user_id, p.at, (p.at AT TIME ZONE 'UTC')::date AS day, CAST(p.price AS numeric) AS price,
               p.category
        FROM unnest(CAST(:user_ids AS integer[]), CAST(:stamps AS timestamptz[]),
                    CAST(:prices AS float8[]), CAST(:categories AS text[])) AS p(user_id, at, price, category)
        JOIN users ON users.id = p.user_id
    )"""

# Sorted by key in every statement, so two workers upserting overlapping batches take their row
# locks in one order and cannot deadlock. `xmax = 0` holds for a row this statement inserted
# (Postgres sets xmax when a row is updated): the new purchase days of each customer.
_PURCHASE_DAYS = text("".join((_WITH_PURCHASES, """,
    days AS (SELECT user_id, day, count(*) AS purchases, sum(price) AS spent FROM purchases GROUP BY user_id, day)
    INSERT INTO purchase_days AS d (user_id, day, purchases, spent)
    SELECT user_id, day, purchases, spent FROM days ORDER BY user_id, day
    ON CONFLICT (user_id, day) DO UPDATE
    SET purchases = d.purchases + EXCLUDED.purchases, spent = d.spent + EXCLUDED.spent
    RETURNING d.user_id, (d.xmax = 0) AS new_day
    """)))

# Merging a batch into a summary: every SET expression reads the row as it was before, so the
# first-day spend is replaced when the batch brings an earlier first day, added to when it
# brings more purchases on that day, and left alone otherwise.
_SUMMARIES = text("".join((_WITH_PURCHASES, """,
    per_user AS (
        SELECT user_id, min(at) AS first_at, max(at) AS last_at, min(day) AS first_day, max(day) AS last_day,
               count(*) AS purchases, sum(price) AS spent
        FROM purchases GROUP BY user_id
    ),
    first_day AS (
        SELECT p.user_id, sum(p.price) AS spent FROM purchases p JOIN per_user u USING (user_id)
        WHERE p.day = u.first_day GROUP BY p.user_id
    ),
    new_days AS (
        SELECT * FROM unnest(CAST(:new_day_users AS integer[]), CAST(:new_days AS integer[])) AS n(user_id, days)
    )
    INSERT INTO customer_summaries AS s (user_id, first_purchase_at, last_purchase_at, first_day, last_day,
                                         purchase_days, purchases, spent, first_day_spent)
    SELECT u.user_id, u.first_at, u.last_at, u.first_day, u.last_day, coalesce(n.days, 0), u.purchases,
           u.spent, f.spent
    FROM per_user u JOIN first_day f USING (user_id) LEFT JOIN new_days n USING (user_id)
    ORDER BY u.user_id
    ON CONFLICT (user_id) DO UPDATE SET
        first_purchase_at = LEAST(s.first_purchase_at, EXCLUDED.first_purchase_at),
        last_purchase_at = GREATEST(s.last_purchase_at, EXCLUDED.last_purchase_at),
        first_day = LEAST(s.first_day, EXCLUDED.first_day),
        last_day = GREATEST(s.last_day, EXCLUDED.last_day),
        purchase_days = s.purchase_days + EXCLUDED.purchase_days,
        purchases = s.purchases + EXCLUDED.purchases,
        spent = s.spent + EXCLUDED.spent,
        first_day_spent = CASE
            WHEN EXCLUDED.first_day < s.first_day THEN EXCLUDED.first_day_spent
            WHEN EXCLUDED.first_day = s.first_day THEN s.first_day_spent + EXCLUDED.first_day_spent
            ELSE s.first_day_spent END
    """)))

_CUSTOMER_CATEGORIES = text("".join((_WITH_PURCHASES, """
    INSERT INTO customer_categories AS c (user_id, category, purchases, spent)
    SELECT user_id, category, count(*), sum(price) FROM purchases GROUP BY user_id, category
    ORDER BY user_id, category
    ON CONFLICT (user_id, category) DO UPDATE
    SET purchases = c.purchases + EXCLUDED.purchases, spent = c.spent + EXCLUDED.spent
    """)))

_CATEGORY_SALES = text("".join((_WITH_PURCHASES, """
    INSERT INTO category_sales AS c (category, purchases, spent)
    SELECT category, count(*), sum(price) FROM purchases GROUP BY category ORDER BY category
    ON CONFLICT (category) DO UPDATE
    SET purchases = c.purchases + EXCLUDED.purchases, spent = c.spent + EXCLUDED.spent
    """)))


def _stored_instant(moment: datetime) -> datetime:
    # BSON dates hold milliseconds: count what MongoDB keeps, so a recount gives the same rows.
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return to_milliseconds(moment)


def purchase_columns(docs: Iterable[dict[str, Any]]) -> dict[str, list[Any]]:
    """The purchases among stored event documents, as the column arrays the statements take."""
    columns: dict[str, list[Any]] = {"user_ids": [], "stamps": [], "prices": [], "categories": []}
    for doc in docs:
        if doc.get("event_type") != PURCHASE:
            continue
        meta = doc.get("metadata") or {}
        columns["user_ids"].append(int(doc["user_id"]))
        columns["stamps"].append(_stored_instant(doc["timestamp"]))
        columns["prices"].append(float(meta.get("price", 0.0)))
        columns["categories"].append(str(meta.get("category", "")))
    return columns


def record_batch(session: Session, batch_id: str, docs: Sequence[dict[str, Any]]) -> bool:
    """Add the stored events `docs` (all carrying `batch_id`) to every counter and summary, once.

    `docs` may hold visitors' events (negative `user_id`): they enter `person_events` only, every
    other table is of users (a visitor's events count there once merged into its user).
    Returns False when this batch had been applied before (nothing is added). The caller commits.
    """
    claimed = session.execute(_CLAIM, {"batch_id": batch_id, "events": len(docs)}).first()
    if claimed is None:
        return False
    users = [doc for doc in docs if int(doc["user_id"]) > 0]
    session.execute(_LOCK_USERS, {"ids": sorted({int(doc["user_id"]) for doc in users})})
    rescore.record_pending(session, (int(doc["user_id"]) for doc in users))
    activity.record(session, users)
    person_events.record(session, docs)
    columns = purchase_columns(users)
    if columns["user_ids"]:
        new_days: dict[int, int] = {}
        for row in session.execute(_PURCHASE_DAYS, columns):
            new_days[row.user_id] = new_days.get(row.user_id, 0) + int(row.new_day)
        session.execute(
            _SUMMARIES, {**columns, "new_day_users": list(new_days), "new_days": list(new_days.values())}
        )
        session.execute(_CUSTOMER_CATEGORIES, columns)
        session.execute(_CATEGORY_SALES, columns)
    return True


def prune_ledger(session: Session, retention_days: int) -> int:
    """Forget applied batch ids older than `retention_days`: a redelivery of a batch older than
    that (a dead letter replayed months later) would be counted again, and `check` would show it.
    Returns the number of ids removed."""
    result = session.execute(
        text("DELETE FROM applied_batches WHERE applied_at < now() - make_interval(days => :days)"),
        {"days": int(retention_days)},
    )
    return rowcount(result)


# ----------------------------------------------------------------------------- reading one customer


@dataclass(frozen=True)
class Summary:
    """One customer's purchase summary (see shared.contracts.tables.CustomerSummary)."""

    user_id: int
    first_purchase_at: datetime
    last_purchase_at: datetime
    first_day: date
    last_day: date
    purchase_days: int
    purchases: int
    spent: float
    first_day_spent: float


_LOAD = text(
    """
    SELECT user_id, first_purchase_at, last_purchase_at, first_day, last_day, purchase_days, purchases,
           CAST(spent AS float8) AS spent, CAST(first_day_spent AS float8) AS first_day_spent
    FROM customer_summaries WHERE user_id = ANY(CAST(:user_ids AS integer[]))
    """
)
_LOAD_CATEGORIES = text(
    "SELECT user_id, category FROM customer_categories WHERE user_id = ANY(CAST(:user_ids AS integer[])) "
    "ORDER BY user_id, category"
)


def load(session: Session, user_ids: Sequence[int]) -> dict[int, Summary]:
    """The summaries of those of the given users who are customers (one indexed query)."""
    if not user_ids:
        return {}
    rows = session.execute(_LOAD, {"user_ids": [int(u) for u in user_ids]})
    return {row.user_id: Summary(**row._mapping) for row in rows}


def load_categories(session: Session, user_ids: Sequence[int]) -> dict[int, list[str]]:
    """The categories each of the given customers has bought (one indexed query)."""
    found: dict[int, list[str]] = {}
    if user_ids:
        for row in session.execute(_LOAD_CATEGORIES, {"user_ids": [int(u) for u in user_ids]}):
            found.setdefault(row.user_id, []).append(row.category)
    return found


# ----------------------------------------------------------------------------- recount from MongoDB

# The tables a recount fills, with their keys and the columns compared.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "activity_days": (("user_id", "day"), ("events", "last_event_at")),
    "purchase_days": (("user_id", "day"), ("purchases", "spent")),
    "customer_summaries": (
        ("user_id",),
        ("first_purchase_at", "last_purchase_at", "first_day", "last_day", "purchase_days", "purchases",
         "spent", "first_day_spent"),
    ),
    "customer_categories": (("user_id", "category"), ("purchases", "spent")),
    "category_sales": (("category",), ("purchases", "spent")),
    "person_events": (("person_id", "event_id"), ("event_type", "at", "properties")),
}

# From the raw rows of the temporary table `recount_events` to each table, grouped by Postgres
# the way the batch path groups one batch.
_RECOUNT = {
    "activity_days": """
        SELECT e.user_id, (e.at AT TIME ZONE 'UTC')::date AS day, count(*) AS events, max(e.at) AS last_event_at
        FROM recount_events e JOIN users ON users.id = e.user_id GROUP BY 1, 2""",
    "purchase_days": """
        SELECT user_id, day, count(*) AS purchases, sum(price) AS spent FROM recount_purchases GROUP BY 1, 2""",
    "customer_summaries": """
        SELECT p.user_id, min(p.at) AS first_purchase_at, max(p.at) AS last_purchase_at, min(p.day) AS first_day,
               max(p.day) AS last_day, count(DISTINCT p.day) AS purchase_days, count(*) AS purchases,
               sum(p.price) AS spent,
               sum(p.price) FILTER (WHERE p.day = f.first_day) AS first_day_spent
        FROM recount_purchases p
        JOIN (SELECT user_id, min(day) AS first_day FROM recount_purchases GROUP BY user_id) f USING (user_id)
        GROUP BY p.user_id""",
    "customer_categories": """
        SELECT user_id, category, count(*) AS purchases, sum(price) AS spent FROM recount_purchases GROUP BY 1, 2""",
    "category_sales": """
        SELECT category, count(*) AS purchases, sum(price) AS spent FROM recount_purchases GROUP BY 1""",
    # Users' and visitors' events, kept by the batch path's own filter (person_events.KNOWN_PERSON).
    "person_events": "".join(("""
        SELECT e.person_id, e.event_id, e.event_type, e.at, e.properties
        FROM (SELECT user_id AS person_id, event_id, event_type, at, properties FROM recount_events) e
        WHERE """, person_events.KNOWN_PERSON)),
}


@dataclass
class Drift:
    table: str
    missing: int  # rows a recount has and the table lacks
    extra: int  # rows the table has and a recount does not
    different: int
    examples: list[str]

    @property
    def rows(self) -> int:
        return self.missing + self.extra + self.different


# Called with the number of events read so far, every 10,000 events.
Progress = Callable[[int], None]


def _load_events(db: Database[Document], session: Session, user_ids: Sequence[int] | None,
                 progress: Progress | None = None) -> tuple[int, set[str]]:
    """Stream MongoDB `events` into the temporary tables `recount_events` and `recount_purchases`.
    Returns the number of events read and the batch ids they carry."""
    session.execute(text("DROP TABLE IF EXISTS recount_events, recount_raw_purchases, recount_purchases"))
    # Every event as its person_events row would be (person_events.row): activity_days reads the
    # person and time of the users' ones.
    session.execute(text(
        "CREATE TEMP TABLE recount_events (user_id bigint, event_id text, event_type text, at timestamptz, "
        "properties jsonb) ON COMMIT DROP"
    ))
    session.execute(text(
        "CREATE TEMP TABLE recount_raw_purchases (user_id integer, at timestamptz, price float8, category text) "
        "ON COMMIT DROP"
    ))
    query = {"user_id": {"$in": [int(u) for u in user_ids]}} if user_ids is not None else {}
    projection = {"_id": 0, "user_id": 1, "event_id": 1, "event_type": 1, "timestamp": 1, "metadata": 1,
                  "batch_id": 1}
    batches: set[str] = set()
    read = 0
    raw = session.connection().connection.driver_connection  # psycopg: COPY needs the DBAPI connection
    assert raw is not None  # None only once a pooled connection is invalidated; this one is checked out
    with raw.cursor() as cursor:
        with cursor.copy("COPY recount_events (user_id, event_id, event_type, at, properties) FROM STDIN") \
                as events_copy, io.StringIO() as purchases_buffer:
            for doc in db[EVENTS].find(query, projection, batch_size=10_000):
                at = _stored_instant(doc["timestamp"]).isoformat()
                person_id, event_id, event_type, _, props = person_events.row(doc)
                events_copy.write_row((person_id, event_id, event_type, at, props))
                if doc.get("batch_id"):
                    batches.add(doc["batch_id"])
                if doc.get("event_type") == PURCHASE:
                    meta = doc.get("metadata") or {}
                    category = str(meta.get("category", ""))
                    purchases_buffer.write(
                        f"{int(doc['user_id'])}\t{at}\t{float(meta.get('price', 0.0))!r}\t{_copy_text(category)}\n"
                    )
                read += 1
                if progress is not None and read % 10_000 == 0:
                    progress(read)
            purchases = purchases_buffer.getvalue()
        with cursor.copy("COPY recount_raw_purchases (user_id, at, price, category) FROM STDIN") as copy:
            copy.write(purchases)
    session.execute(text(
        "CREATE TEMP TABLE recount_purchases ON COMMIT DROP AS "
        "SELECT r.user_id, r.at, (r.at AT TIME ZONE 'UTC')::date AS day, CAST(r.price AS numeric) AS price, "
        "r.category FROM recount_raw_purchases r JOIN users ON users.id = r.user_id"
    ))
    return read, batches


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _scope(table: str, user_ids: Sequence[int] | None) -> tuple[str, dict[str, Any]]:
    if user_ids is None:
        return "", {}
    person = next((k for k in ("user_id", "person_id") if k in TABLES[table][0]), None)
    if person is None:
        return "", {}
    return f" WHERE {person} = ANY(CAST(:scope AS bigint[]))", {"scope": [int(u) for u in user_ids]}


def rebuild(db: Database[Document], session: Session, user_ids: Sequence[int] | None = None,
            progress: Progress | None = None) -> dict[str, int]:
    """Replace every table (or the given users' rows; category totals only on a full rebuild)
    with a recount from MongoDB `events`. Returns the rows written per table."""
    read, batches = _load_events(db, session, user_ids, progress)
    written = {"events read": read}
    for table, sql in _RECOUNT.items():
        if user_ids is not None and table == "category_sales":
            continue  # a total over everyone cannot be rebuilt from some users' events
        keys, columns = TABLES[table]
        where, params = _scope(table, user_ids)
        session.execute(text(f"DELETE FROM {table}{where}"), params)  # nosec B608
        names = ", ".join((*keys, *columns))
        result = session.execute(text(f"INSERT INTO {table} ({names}) SELECT {names} FROM ({sql}) AS r"))  # nosec B608
        written[table] = rowcount(result)
    # Every batch with stored events is now counted: its redelivery must not add it again.
    if batches:
        session.execute(
            text("INSERT INTO applied_batches (batch_id, events) SELECT unnest(CAST(:ids AS text[])), 0 "
                 "ON CONFLICT (batch_id) DO NOTHING"),
            {"ids": sorted(batches)},
        )
    return written


def check(db: Database[Document], session: Session, user_ids: Sequence[int] | None = None,
          progress: Progress | None = None,
          examples: int = 5) -> list[Drift]:
    """Recount into temporary tables and compare with the stored ones, row by row."""
    _load_events(db, session, user_ids, progress)
    drifts = []
    for table, sql in _RECOUNT.items():
        if user_ids is not None and table == "category_sales":
            continue
        keys, columns = TABLES[table]
        where, params = _scope(table, user_ids)
        join = " AND ".join(f"s.{k} = r.{k}" for k in keys)
        differs = " OR ".join(f"s.{c} IS DISTINCT FROM r.{c}" for c in columns)
        merged_keys = ", ".join(f"coalesce(s.{k}, r.{k}) AS {k}" for k in keys)
        stored, recounted = (", ".join(f"{side}.{c}" for c in columns) for side in ("s", "r"))
        order, first = ", ".join(keys), keys[0]
        rows = session.execute(
            text(
                f"SELECT {merged_keys}, s.{first} IS NULL AS missing, r.{first} IS NULL AS extra, "  # nosec B608
                f"row({stored})::text AS stored, row({recounted})::text AS recounted "
                f"FROM (SELECT * FROM {table}{where}) s FULL JOIN ({sql}) r ON {join} "
                f"WHERE s.{first} IS NULL OR r.{first} IS NULL OR {differs} ORDER BY {order}"
            ),
            params,
        ).all()
        drift = Drift(table, 0, 0, 0, [])
        for row in rows:
            if row.missing:
                drift.missing += 1
            elif row.extra:
                drift.extra += 1
            else:
                drift.different += 1
            if len(drift.examples) < examples:
                key = ", ".join(f"{k}={getattr(row, k)}" for k in keys)
                drift.examples.append(f"{key}: stored {row.stored if not row.missing else '-'}, "
                                      f"recounted {row.recounted if not row.extra else '-'}")
        drifts.append(drift)
    return drifts
