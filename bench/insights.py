"""Benchmark: funnels and retention from `person_events` against one aggregation over raw `events` (issue 24).

On a Postgres and a SecantusDB of its own (scripts.private_servers; the machine's Redis under a prefix
of its own), a synthetic population of BENCH_INSIGHTS_PERSONS persons (default 100,000: nine in ten
users, a quarter of them signed up during the 16 weeks the events cover, the others imported before
it; one in ten a visitor never identified, a negative person id) and its events, grown to each size in
BENCH_INSIGHTS_EVENTS (default 100,000 then 1,000,000: the same persons, more journeys), stored in bulk
twice, as the pipeline stores them: MongoDB `events` (the worker's documents, shared.contracts.schemas.
event_document, with the indexes of shared.infra.mongo) and Postgres `person_events` (one row per
event, the properties rule of the issue-24 contract: top-level scalar metadata, strings of at most 200
characters). Journeys: page views (home, pricing, blog, docs; nested and over-long metadata too), after
a pricing view sometimes a `trial_started` (hours to weeks later), after a trial sometimes a
`user_purchase` (price, category); signups' `user_created` events carry the users' `created_at`, as the
worker's do. Loading is not what is measured (its time is printed).

Three questions at each size, each answered by Pulse (shared.analytics.insights: `funnels.funnel`,
`retention.retention`, SQL over `person_events`) and by the reference, ONE MongoDB aggregation over
`events` each; Python only shapes its output (rounding, ratios, the triangle's cells):

* a funnel: page_view where {"page": "pricing"} → trial_started → user_purchase, 7-day window, over
  the first 15 of the 16 weeks (the aggregation groups each person's step times, picks each step
  with $filter/$min, and takes the medians as Postgres' percentile_cont does: the middle of the
  sorted deltas, $sortArray; mongod's $median is a discrete percentile, the lower middle value);
* a 12-week retention matrix, cohort = first page_view;
* a 12-week retention matrix, cohort = signup: the aggregation knows a user's signup instant from
  the user's `user_created` event (its timestamp is `users.created_at`).

Retention's triangle ends at the real current time (`retention` reads the clock), so the events end
at the start of the current week and the reference cuts its triangle at the same clock; a run that
straddles Monday 00:00 UTC is asked again.

Printed per size: each side's time (best of BENCH_INSIGHTS_REPEAT runs, default 3, for Pulse; of
BENCH_INSIGHTS_REFERENCE_REPEAT, default 1, for the reference: a full pass over the log each time),
the ratio reference / Pulse, and from the smallest size to the largest how each grows. The two answers
must agree exactly (every step's persons, conversions and median, every cohort's size, active counts
and rates), or the run exits with status 1 naming the differences.

`python bench/insights.py [--reference-only]` (`--reference-only`: the reference side and the loader
alone, for a tree without shared/analytics/insights). Env: BENCH_INSIGHTS_PERSONS,
BENCH_INSIGHTS_EVENTS="100000,1000000", BENCH_INSIGHTS_REPEAT, BENCH_INSIGHTS_REFERENCE_REPEAT,
BENCH_SEED. tests/e2e/test_bench_insights.py runs it at toy sizes.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import LINE, BenchError, run  # noqa: E402

from scripts.private_servers import PrivateMongo, PrivatePostgres  # noqa: E402

PERSONS = int(os.environ.get("BENCH_INSIGHTS_PERSONS", 100_000))
SIZES = [int(s) for s in os.environ.get("BENCH_INSIGHTS_EVENTS", "100000,1000000").split(",")]
REPEAT = int(os.environ.get("BENCH_INSIGHTS_REPEAT", 3))
REFERENCE_REPEAT = int(os.environ.get("BENCH_INSIGHTS_REFERENCE_REPEAT", 1))
SEED = int(os.environ.get("BENCH_SEED", 20261207))

WEEK = timedelta(days=7)
WEEKS = 16  # the events' span, ending at the start of the current week
PERIODS = 12  # retention's periods
WINDOW_SECONDS = 7 * 86400  # the funnel's
VISITOR_SHARE = 0.1
NEW_USER_SHARE = 0.25  # users who sign up during the 16 weeks (the others were imported before)
PAGES = (("home", 0.35), ("pricing", 0.30), ("blog", 0.20), ("docs", 0.15))
CATEGORIES = ("books", "electronics", "garden", "toys", "music")
FUNNEL = (("page_view", {"page": "pricing"}), ("trial_started", {}), ("user_purchase", {}))
CHUNK = 20_000  # events per insert


def monday(moment: datetime) -> datetime:
    day = moment.astimezone(UTC).date()
    return datetime.combine(day - timedelta(days=day.weekday()), datetime.min.time(), UTC)


# ----------------------------------------------------------------------------- the population


class Population:
    """Persons and a stream of their journeys' events; `events(n)` yields the next n (the second
    size continues the first: same persons, more of their journeys)."""

    def __init__(self, persons: int, start: datetime, end: datetime, seed: int) -> None:
        self.rng = random.Random(seed)
        self.start, self.end = start, end
        self.visitors = max(1, round(persons * VISITOR_SHARE))
        self.users = persons - self.visitors
        span = (end - start).total_seconds()
        # users: id -> created_at; the new ones sign up in the window (not in its last day: their
        # journeys come after it), the imported ones up to a year before it.
        self.created: list[datetime] = []
        self.new_users: list[int] = []
        for user_id in range(1, self.users + 1):
            if self.rng.random() < NEW_USER_SHARE:
                self.created.append(start + timedelta(seconds=int(self.rng.random() * (span - 86400))))
                self.new_users.append(user_id)
            else:
                self.created.append(start - timedelta(seconds=int(self.rng.uniform(3600, 365 * 86400))))
        # When each person is first seen (a journey is never before it) and how active it is.
        self.first_seen = {uid: max(self.created[uid - 1], start) for uid in range(1, self.users + 1)}
        for visitor_id in range(1, self.visitors + 1):
            self.first_seen[-visitor_id] = start + timedelta(seconds=int(self.rng.random() * (span - 3600)))
        self.people = list(self.first_seen)
        # Cumulative: random.choices would otherwise add up every person's weight at each draw.
        self.cum_weights = list(itertools.accumulate(self.rng.lognormvariate(0, 1.0) for _ in self.people))
        self.serial = 0

    def _event(self, person: int, event_type: str, at: datetime, metadata: dict[str, Any]) -> dict[str, Any]:
        self.serial += 1
        return {"person": person, "event_id": f"ev-{self.serial:010d}", "event_type": event_type, "at": at,
                "metadata": metadata}

    def _page(self) -> str:
        roll, total = self.rng.random(), 0.0
        for page, share in PAGES:
            total += share
            if roll < total:
                return page
        return PAGES[-1][0]

    def _journey(self) -> list[dict[str, Any]]:
        rng = self.rng
        person = rng.choices(self.people, cum_weights=self.cum_weights)[0]
        first = self.first_seen[person]
        # Skewed towards the person's first days: activity decays, so retention falls week by week.
        at = first + (self.end - first) * (rng.random() ** 2)
        at = at.replace(microsecond=0)
        out = []
        pricing = False
        for _ in range(1 + min(4, int(rng.expovariate(1.4)))):
            page = self._page()
            pricing = pricing or page == "pricing"
            metadata: dict[str, Any] = {"page": page, "path": f"/{page}", "utm": {"source": rng.choice(
                ("ads", "newsletter", "search"))}, "scroll": round(rng.random(), 2), "returning": rng.random() < 0.5}
            if rng.random() < 0.05:  # an over-long string: not a property (the 200-character rule)
                metadata["title"] = "t" * 240
            out.append(self._event(person, "page_view", at, metadata))
            at += timedelta(seconds=rng.randint(5, 900))
        if pricing and rng.random() < 0.35:
            at += timedelta(seconds=int(rng.lognormvariate(11.0, 1.3)))  # median ~17 h, some past a week
            out.append(self._event(person, "trial_started", at, {"plan": rng.choice(("pro", "team"))}))
            if rng.random() < 0.45:
                at += timedelta(seconds=int(rng.lognormvariate(11.5, 1.2)))
                out.append(self._event(person, "user_purchase", at, self._purchase()))
        elif rng.random() < 0.04:  # a purchase without the funnel before it
            at += timedelta(seconds=rng.randint(60, 86400))
            out.append(self._event(person, "user_purchase", at, self._purchase()))
        return [e for e in out if e["at"] < self.end]

    def _purchase(self) -> dict[str, Any]:
        return {"product_id": f"P-{self.rng.randint(1, 500)}", "price": round(self.rng.uniform(5, 250), 2),
                "category": self.rng.choice(CATEGORIES)}

    def signups(self) -> list[dict[str, Any]]:
        return [self._event(uid, "user_created", self.created[uid - 1], {}) for uid in self.new_users]

    def events(self, n: int, first: bool) -> Iterator[dict[str, Any]]:
        given = 0
        if first:
            for event in self.signups()[:n]:
                given += 1
                yield event
        while given < n:
            for event in self._journey()[: n - given]:
                given += 1
                yield event


def properties(metadata: dict[str, Any]) -> dict[str, Any]:
    """The contract's rule: top-level entries whose value is a str of at most 200 characters, an
    int, a float or a bool."""
    return {key: value for key, value in metadata.items()
            if (isinstance(value, str) and len(value) <= 200) or isinstance(value, bool | int | float)}


def load_people(pg_url: str, population: Population) -> None:
    import psycopg

    with psycopg.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE users, addresses, cities, countries, visitors, person_events RESTART IDENTITY CASCADE")
        cur.execute("INSERT INTO countries (id, code, name) VALUES (1, 'EE', 'Estonia')")
        cur.execute("INSERT INTO cities (id, name, country_id) VALUES (1, 'Tallinn', 1)")
        cur.execute("INSERT INTO addresses (id, street, city_id) VALUES (1, 'Bench Street 1', 1)")
        with cur.copy("COPY users (id, username, email, full_name, address_id, created_at) FROM STDIN") as copy:
            for uid, created in enumerate(population.created, start=1):
                copy.write_row((uid, f"u{uid}", f"u{uid}@insights.example", f"Bench User {uid}", 1, created))
        with cur.copy("COPY visitors (id, anonymous_id, created_at) FROM STDIN") as copy:
            for vid in range(1, population.visitors + 1):
                copy.write_row((vid, f"anon-{vid}", population.first_seen[-vid]))
        cur.execute("SELECT setval('users_id_seq', %s)", (population.users,))
        cur.execute("SELECT setval('visitors_id_seq', %s)", (population.visitors,))


def load_events(db, pg_url: str, events: Iterator[dict[str, Any]]) -> tuple[int, float, float]:
    """Both stores, a chunk at a time. Returns (events, MongoDB seconds, Postgres seconds)."""
    import psycopg

    from shared.contracts.schemas import event_document

    count, mongo_s, pg_s = 0, 0.0, 0.0
    with psycopg.connect(pg_url) as conn:
        while True:
            chunk = [e for _, e in zip(range(CHUNK), events, strict=False)]
            if not chunk:
                break
            count += len(chunk)
            docs = []
            for e in chunk:
                person = e["person"]
                doc = event_document(event_id=e["event_id"], user_id=person, event_type=e["event_type"],
                                     timestamp=e["at"], metadata=e["metadata"], geo=None,
                                     received_at=e["at"] + timedelta(seconds=2),
                                     anonymous_id=f"anon-{-person}" if person < 0 else None)
                doc["batch_id"] = "bench-insights"
                docs.append(doc)
            started = time.perf_counter()
            db.events.insert_many(docs, ordered=False)
            mongo_s += time.perf_counter() - started
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(
                    "COPY person_events (person_id, event_id, event_type, at, properties) FROM STDIN") as copy:
                for e in chunk:
                    copy.write_row((e["person"], e["event_id"], e["event_type"], e["at"],
                                    json.dumps(properties(e["metadata"]))))
            conn.commit()
            pg_s += time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("ANALYZE person_events")
        conn.commit()
        pg_s += time.perf_counter() - started
    return count, mongo_s, pg_s


# ----------------------------------------------------------------------------- the reference


def _ratio(num: int, den: int, places: int) -> float | None:
    if den == 0:
        return None
    return float((Decimal(num) / Decimal(den)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP))


def _median_ms(deltas: str) -> dict:
    """Postgres' percentile_cont(0.5) of the array's non-null numbers, as an expression: the mean of
    the two middle values of the sorted array (the one middle value when the count is odd). Not
    $median: it is mongod's discrete percentile (the lower middle value), not an interpolation."""
    middle = {"$divide": [{"$subtract": ["$$n", 1]}, 2]}
    return {"$let": {
        "vars": {"s": {"$sortArray": {"input": {"$filter": {"input": deltas, "cond": {"$ne": ["$$this", None]}}},
                                      "sortBy": 1}}},
        "in": {"$let": {"vars": {"n": {"$size": "$$s"}}, "in": {"$cond": [{"$eq": ["$$n", 0]}, None, {"$avg": [
            {"$arrayElemAt": ["$$s", {"$toInt": {"$floor": middle}}]},
            {"$arrayElemAt": ["$$s", {"$toInt": {"$ceil": middle}}]}]}]}}}}}


def _reached(deltas: str) -> dict:
    return {"$size": {"$filter": {"input": deltas, "cond": {"$ne": ["$$this", None]}}}}


def reference_funnel(db, start: datetime, end: datetime) -> dict[str, Any]:
    """Entry = a person's first step-1 event (its where matched) in [start, end); step k = the
    earliest step-k event after step k-1's, within the window from the entry."""
    (t1, where1), (t2, _), (t3, _) = FUNNEL
    window_ms = WINDOW_SECONDS * 1000
    first = {"event_type": t1, "timestamp": {"$gte": start, "$lt": end},
             **{f"metadata.{key}": value for key, value in where1.items()}}
    later = {"event_type": {"$in": [t2, t3]},
             "timestamp": {"$gt": start, "$lte": end + timedelta(seconds=WINDOW_SECONDS)}}

    def times_of(event_type: str) -> dict:
        return {"$push": {"$cond": [{"$eq": ["$event_type", event_type]}, "$timestamp", None]}}

    def earliest_after(times: str, after: str) -> dict:
        return {"$cond": [{"$eq": [after, None]}, None, {"$min": {"$filter": {"input": times, "cond": {"$and": [
            {"$ne": ["$$this", None]}, {"$gt": ["$$this", after]}, {"$lte": ["$$this", "$deadline"]}]}}}}]}

    pipeline = [
        {"$match": {"$or": [first, later]}},
        {"$group": {"_id": "$user_id",
                    # $min skips the nulls: the first matching step-1 event (the $match let only those in)
                    "entry": {"$min": {"$cond": [{"$eq": ["$event_type", t1]}, "$timestamp", None]}},
                    "s2": times_of(t2), "s3": times_of(t3)}},
        {"$match": {"entry": {"$ne": None}}},
        {"$addFields": {"deadline": {"$add": ["$entry", window_ms]}}},
        {"$addFields": {"t2": earliest_after("$s2", "$entry")}},
        {"$addFields": {"t3": earliest_after("$s3", "$t2")}},
        {"$group": {"_id": None, "entered": {"$sum": 1},
                    "d2": {"$push": {"$cond": [{"$eq": ["$t2", None]}, None, {"$subtract": ["$t2", "$entry"]}]}},
                    "d3": {"$push": {"$cond": [{"$eq": ["$t3", None]}, None, {"$subtract": ["$t3", "$t2"]}]}}}},
        {"$project": {"_id": 0, "entered": 1, "reached2": _reached("$d2"), "reached3": _reached("$d3"),
                      "median2": _median_ms("$d2"), "median3": _median_ms("$d3")}},
    ]
    rows = list(db.events.aggregate(pipeline, allowDiskUse=True))
    row = rows[0] if rows else {"entered": 0, "reached2": 0, "reached3": 0, "median2": None, "median3": None}
    counts = [row["entered"], row["reached2"], row["reached3"]]
    # Milliseconds (MongoDB's date arithmetic) to seconds, rounded as the contract says.
    medians = [None, *(None if row[m] is None else round(row[m] / 1000, 3) for m in ("median2", "median3"))]
    steps = []
    for k, (event_type, _) in enumerate(FUNNEL):
        steps.append({"event_type": event_type, "persons": counts[k],
                      "conversion_from_previous": _ratio(counts[k], counts[k - 1] if k else counts[0], 4),
                      "conversion_from_first": _ratio(counts[k], counts[0], 4),
                      "median_seconds_to_convert": medians[k]})
    return {"steps": steps, "breakdown": None}


def _triangle(cells: dict[tuple[datetime, int], int], now: datetime, cohort_type: str,
              event_type: str | None) -> dict[str, Any]:
    current = monday(now)
    cohorts = []
    for cohort in sorted({c for c, _ in cells}):
        begun = min(PERIODS, (current - cohort) // WEEK + 1)
        size = cells.get((cohort, 0), 0)
        active = [size] + [cells.get((cohort, p), 0) for p in range(1, begun)]
        cohorts.append({"cohort": cohort.date().isoformat(), "size": size, "active": active,
                        "rates": [_ratio(a, size, 3) for a in active]})
    return {"period": "week", "cohort_type": cohort_type, "event_type": event_type, "cohorts": cohorts}


def _week_of(path: str) -> dict:
    return {"$dateTrunc": {"date": path, "unit": "week", "startOfWeek": "monday", "timezone": "UTC"}}


def _cells(db, pipeline: list[dict]) -> dict[tuple[datetime, int], int]:
    """The pipeline's tail: (person, cohort week, the weeks the person was active) → counts per
    (cohort, period) cell."""
    tail = [
        {"$unwind": "$weeks"},
        {"$project": {"cohort": 1,
                      "p": {"$divide": [{"$subtract": ["$weeks", "$cohort"]}, WEEK.total_seconds() * 1000]}}},
        {"$match": {"p": {"$gte": 0, "$lt": PERIODS}}},
        {"$group": {"_id": {"c": "$cohort", "p": "$p"}, "n": {"$sum": 1}}},
    ]
    cells = {}
    for row in db.events.aggregate(pipeline + tail, allowDiskUse=True):
        cohort = row["_id"]["c"]
        cohort = cohort if cohort.tzinfo else cohort.replace(tzinfo=UTC)
        cells[(cohort, int(row["_id"]["p"]))] = row["n"]
    return cells


def reference_retention_first_event(db, event_type: str, start: datetime, end: datetime,
                                    now: datetime) -> dict[str, Any]:
    """Cohort = the week of a person's first `event_type` event (visitors too); active in week p =
    an event of that type then."""
    pipeline = [
        {"$match": {"event_type": event_type}},
        {"$group": {"_id": {"u": "$user_id", "w": _week_of("$timestamp")}}},
        {"$group": {"_id": "$_id.u", "cohort": {"$min": "$_id.w"}, "weeks": {"$push": "$_id.w"}}},
        {"$match": {"cohort": {"$gte": start, "$lt": end}}},
    ]
    return _triangle(_cells(db, pipeline), now, "first_event", event_type)


def reference_retention_signup(db, start: datetime, end: datetime, now: datetime) -> dict[str, Any]:
    """Cohort = the week of a user's signup (the `user_created` event's timestamp is the user's
    created_at); active in week p > 0 = any event of the user then."""
    pipeline = [
        {"$match": {"user_id": {"$gt": 0}}},
        {"$group": {"_id": {"u": "$user_id", "w": _week_of("$timestamp")},
                    "signup": {"$min": {"$cond": [{"$eq": ["$event_type", "user_created"]}, "$timestamp", None]}}}},
        {"$group": {"_id": "$_id.u", "signup": {"$min": "$signup"}, "weeks": {"$push": "$_id.w"}}},
        {"$match": {"signup": {"$gte": start, "$lt": end}}},
        {"$addFields": {"cohort": _week_of("$signup")}},
    ]
    return _triangle(_cells(db, pipeline), now, "signup", None)


# ----------------------------------------------------------------------------- Pulse


def pulse_questions(start: datetime, end: datetime, funnel_end: datetime) -> dict[str, Callable[[], dict]]:
    """The three questions asked of Pulse (imported here: the package may be missing, see
    --reference-only)."""
    from shared.analytics.insights import funnels, retention
    from shared.infra.db import session_scope

    funnel_query = funnels.FunnelQuery(
        steps=[funnels.FunnelStep(event_type=t, where=dict(w)) for t, w in FUNNEL], window_seconds=WINDOW_SECONDS,
        start=start, end=funnel_end)

    def ask(function, query) -> Callable[[], dict]:
        def answer() -> dict:
            with session_scope() as session:
                return function(session, query)
        return answer

    first_event = retention.RetentionQuery(cohort="first_event", period="week", periods=PERIODS,
                                           event_type="page_view", start=start.date(), end=end.date())
    signup = retention.RetentionQuery(cohort="signup", period="week", periods=PERIODS, start=start.date(),
                                      end=end.date())
    return {"funnel": ask(funnels.funnel, funnel_query), "retention first_event": ask(retention.retention, first_event),
            "retention signup": ask(retention.retention, signup)}


# ----------------------------------------------------------------------------- comparison


def _close_ratio(value: Any, num: int, den: int, places: int) -> bool:
    """`value` is the exact ratio rounded to `places` (half up, as Postgres' numeric round, or half
    to even, as Python's round of the float: both are the contract's "rounded")."""
    if den == 0:
        return value is None
    if value is None:
        return False
    exact = Decimal(num) / Decimal(den)
    quantum = Decimal(1).scaleb(-places)
    allowed = {float(exact.quantize(quantum, ROUND_HALF_UP)), float(exact.quantize(quantum, ROUND_HALF_EVEN)),
               round(num / den, places)}
    return float(value) in allowed


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def differences(name: str, pulse: dict, ref: dict) -> list[str]:
    out: list[str] = []
    if name == "funnel":
        if len(pulse.get("steps", [])) != len(ref["steps"]):
            return [f"funnel: {len(pulse.get('steps', []))} steps vs {len(ref['steps'])}"]
        if pulse.get("breakdown") is not None:
            out.append(f"funnel: breakdown {pulse['breakdown']!r} asked for none")
        counts = [s["persons"] for s in ref["steps"]]
        for k, (mine, theirs) in enumerate(zip(pulse["steps"], ref["steps"], strict=True)):
            label = f"funnel step {k + 1} ({theirs['event_type']})"
            if mine.get("event_type") != theirs["event_type"] or mine.get("persons") != theirs["persons"]:
                out.append(f"{label}: Pulse {mine.get('event_type')} {mine.get('persons')} persons, "
                           f"reference {theirs['persons']}")
                continue
            previous = counts[k - 1] if k else counts[0]
            for key, den in (("conversion_from_previous", previous), ("conversion_from_first", counts[0])):
                if not _close_ratio(mine.get(key), counts[k], den, 4):
                    out.append(f"{label}: {key} Pulse {mine.get(key)}, reference {theirs[key]}")
            if _number(mine.get("median_seconds_to_convert")) != theirs["median_seconds_to_convert"]:
                out.append(f"{label}: median Pulse {mine.get('median_seconds_to_convert')}, "
                           f"reference {theirs['median_seconds_to_convert']}")
        return out
    for key in ("period", "cohort_type", "event_type"):
        if pulse.get(key) != ref[key]:
            out.append(f"{name}: {key} Pulse {pulse.get(key)!r}, reference {ref[key]!r}")
    mine = {c["cohort"]: c for c in pulse.get("cohorts", [])}
    theirs = {c["cohort"]: c for c in ref["cohorts"]}
    for cohort in sorted(set(mine) | set(theirs)):
        a, b = mine.get(cohort), theirs.get(cohort)
        if a is None or b is None:
            out.append(f"{name} cohort {cohort}: only in {'the reference' if a is None else 'Pulse'}")
            continue
        if a.get("size") != b["size"] or list(a.get("active", [])) != b["active"]:
            out.append(f"{name} cohort {cohort}: Pulse size {a.get('size')} active {a.get('active')}, "
                       f"reference size {b['size']} active {b['active']}")
            continue
        rates = list(a.get("rates", []))
        if len(rates) != len(b["active"]) or not all(
                _close_ratio(rate, n, b["size"], 3) for rate, n in zip(rates, b["active"], strict=False)):
            out.append(f"{name} cohort {cohort}: rates Pulse {rates}, reference {b['rates']}")
    return out


# ----------------------------------------------------------------------------- the run


def best_of(times: int, ask: Callable[[], dict]) -> tuple[float, dict]:
    best, answer = float("inf"), {}
    for _ in range(max(1, times)):
        started = time.perf_counter()
        answer = ask()
        best = min(best, time.perf_counter() - started)
    return best, answer


def summary(name: str, answer: dict) -> str:
    if name == "funnel":
        return "persons " + " → ".join(f"{s['persons']:,}" for s in answer["steps"]) + ", medians " + " / ".join(
            "-" if s["median_seconds_to_convert"] is None else f"{s['median_seconds_to_convert'] / 3600:.1f} h"
            for s in answer["steps"][1:])
    cohorts = answer["cohorts"]
    first = cohorts[0] if cohorts else {"cohort": "-", "size": 0, "rates": []}
    return (f"{len(cohorts)} cohorts, {sum(c['size'] for c in cohorts):,} persons; {first['cohort']}: size "
            f"{first['size']:,}, rates {' '.join(f'{r:.3f}' for r in first['rates'][:6])}"
            + (" …" if len(first["rates"]) > 6 else ""))


def measure(db, start: datetime, end: datetime, funnel_end: datetime, reference_only: bool) -> dict[str, dict]:
    """Each question, both sides, at the same clock (asked again when the week turns meanwhile)."""
    for _ in range(2):
        now = datetime.now(UTC)
        references: dict[str, Callable[[], dict]] = {
            "funnel": lambda: reference_funnel(db, start, funnel_end),
            "retention first_event": lambda now=now: reference_retention_first_event(db, "page_view", start, end, now),
            "retention signup": lambda now=now: reference_retention_signup(db, start, end, now),
        }
        pulse = {} if reference_only else pulse_questions(start, end, funnel_end)
        results = {}
        for name, reference in references.items():
            ref_s, ref_answer = best_of(REFERENCE_REPEAT, reference)
            row: dict[str, Any] = {"reference_s": ref_s, "reference": ref_answer}
            if name in pulse:
                row["pulse_s"], row["pulse"] = best_of(REPEAT, pulse[name])
            results[name] = row
        if monday(datetime.now(UTC)) == monday(now):
            return results
    raise BenchError("the week turned twice during one measurement")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-only", action="store_true",
                        help="load and run the reference aggregations only (no shared.analytics.insights needed)")
    reference_only = parser.parse_args().reference_only
    if not reference_only:
        try:
            import shared.analytics.insights.funnels  # noqa: F401
            import shared.analytics.insights.retention  # noqa: F401
        except ImportError as exc:
            raise BenchError(f"shared.analytics.insights is missing ({exc}); --reference-only runs the "
                             "reference side alone") from exc

    end = monday(datetime.now(UTC))
    start = end - WEEKS * WEEK
    funnel_end = end - WEEK
    postgres, mongo = PrivatePostgres(), PrivateMongo()
    prefix = f"pulse-bench-insights-{uuid.uuid4().hex[:8]}:"
    print(LINE)
    print("bench/insights.py — a funnel and two retention matrices: Pulse (person_events) vs one MongoDB "
          "aggregation over events")
    print(f"private servers: Postgres {postgres.root}, SecantusDB {mongo.root}, Redis keys {prefix}*")
    print(LINE, flush=True)
    rows: list[tuple[int, dict[str, dict]]] = []
    disagreements: list[str] = []
    try:
        postgres.start()
        mongo.start()
        os.environ.update({"DATABASE_URL": f"{postgres.url}/pulse", "MONGO_URI": mongo.mongo_uri("pulse"),
                           "CACHE_PREFIX": prefix, "LOG_LEVEL": "WARNING"})
        from shared.infra.migrate import upgrade
        from shared.infra.mongo import ensure_indexes, get_database

        upgrade(os.environ["DATABASE_URL"])
        pg_url = os.environ["DATABASE_URL"].replace("+psycopg", "")
        db = get_database()
        ensure_indexes(db)
        population = Population(PERSONS, start, end, SEED)
        if SIZES[0] < len(population.new_users):
            raise BenchError(f"the first size ({SIZES[0]:,} events) must hold every signup's user_created event "
                             f"({len(population.new_users):,}): fewer persons or more events")
        load_people(pg_url, population)
        print(f"persons: {PERSONS:,} ({population.users:,} users, {len(population.new_users):,} of them signed up "
              f"in the window; {population.visitors:,} visitors); events {start.date()} .. {end.date()} ({WEEKS} "
              f"weeks); funnel entries until {funnel_end.date()}, window {WINDOW_SECONDS // 86400} days"
              + ("; REFERENCE ONLY" if reference_only else ""), flush=True)
        loaded = 0
        for size in SIZES:
            if size <= loaded:
                raise BenchError(f"BENCH_INSIGHTS_EVENTS must grow: {SIZES}")
            count, mongo_s, pg_s = load_events(db, pg_url, population.events(size - loaded, first=loaded == 0))
            loaded += count
            print(f"\n{loaded:,} events: loaded {count:,} more in {mongo_s + pg_s:.1f}s (MongoDB {mongo_s:.1f}s = "
                  f"{count / mongo_s:,.0f}/s, Postgres person_events {pg_s:.1f}s = {count / pg_s:,.0f}/s)", flush=True)
            results = measure(db, start, end, funnel_end, reference_only)
            for name, row in results.items():
                line = f"  {name:<22} reference {row['reference_s'] * 1000:10.1f} ms"
                if "pulse" in row:
                    found = differences(name, row["pulse"], row["reference"])
                    disagreements += [f"at {loaded:,} events: {d}" for d in found]
                    line += (f"   Pulse {row['pulse_s'] * 1000:8.1f} ms   reference/Pulse "
                             f"{row['reference_s'] / row['pulse_s']:7.1f}x   "
                             + ("agree" if not found else f"DISAGREE ({len(found)})"))
                print(line)
                print(f"  {'':<22} {summary(name, row['reference'])}", flush=True)
            rows.append((loaded, results))
    finally:
        mongo.remove()
        postgres.remove()
    print("\n" + LINE)
    if len(rows) > 1:
        (small, first), (large, last) = rows[0], rows[-1]
        for name in first:
            grown = last[name]["reference_s"] / first[name]["reference_s"]
            line = f"{name:<22} events x{large / small:.0f}: reference x{grown:.2f}"
            if "pulse_s" in first[name]:
                line += f", Pulse x{last[name]['pulse_s'] / first[name]['pulse_s']:.2f}"
            print(line)
    if reference_only:
        print("reference only (--reference-only): nothing compared")
        return
    if disagreements:
        raise BenchError("Pulse and the reference disagree:\n  " + "\n  ".join(disagreements[:40]))
    print("Pulse and the reference agree exactly at every size: every step's persons, conversions and median, "
          "every cohort's size, active counts and rates")


if __name__ == "__main__":
    run(main)
