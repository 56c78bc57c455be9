"""`pulse backfill FILE`: import a history of users and their events.

Two formats:

* NDJSON (`.ndjson`, `.jsonl`): one JSON object per line, either a user (the signup fields
  `username`, `email`, `full_name`, `address`, and optionally `created_at`) or an event (the
  fields of `POST /api/events`, with the user given as `user_id` or as the `username` of a user
  in the file or already in Pulse), or as an `anonymous_id` (a visitor: stored under it as the API
  stores it, and linked to the user when the line has both).
* CSV of transactions (`.csv`), columns `customer_id,date,quantity,amount` (header required,
  extra columns ignored; `date` as `YYYY-MM-DD`, `YYYYMMDD` or an ISO 8601 instant): every row is a
  purchase of `amount` by the user `<--username-prefix><customer_id>`, created when missing with
  the address given by `--city`/`--country` and an e-mail at `--email-domain`.

The whole file is validated first, with the API's own models (shared.contracts.schemas), and nothing is
imported when a line is invalid (each bad line is reported with its field), unless
`--skip-invalid`. Then users are written to Postgres in bulk and events go through the worker's
storage path (services.worker.storage: MongoDB `events`, then the Postgres counters and
summaries, exactly once), so everything derived from them is right afterwards; the users whose
history changed are queued for rescoring like any other.

Idempotent: an event is `(user_id, event_id)` (shared.contracts.event_identity); an event without an
`event_id` gets one derived from its content (and, in a CSV, from how many identical rows precede
it), an NDJSON event without a `timestamp` is dated by the file's modification time, batches get
ids derived from their events' identities, and users are matched by username, so a re-run (or a
run resumed after a crash) stores and counts nothing twice. Copies of one event in the file are
one event: the first is stored, the others reported as already stored.
Imported users are not new signups: they get no welcome e-mail and no `user_created` event.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kombu.exceptions import KombuError
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from shared.contracts.schemas import UNION_TAGS, EventMessage, SignupRequest, SingleEvent
from shared.contracts.topology import COMPUTE_PROFILES
from shared.infra.celery_app import create_celery_app
from shared.infra.db import rowcount, session_scope
from shared.infra.mongo import get_database, prepare_database
from shared.pipeline.reference import country_by_code, resolve_city

CHUNK = 1000


@dataclass
class Problem:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass
class Plan:
    """What a validated file holds: users by lower-case username, and how many events."""

    users: dict[str, tuple[SignupRequest, datetime | None]] = field(default_factory=dict)
    events: int = 0
    usernames: set[str] = field(default_factory=set)  # referenced by events
    user_ids: set[int] = field(default_factory=set)  # referenced by events
    problems: list[Problem] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading the file


def _problems(line: int, error: ValidationError) -> list[Problem]:
    return [Problem(line, ".".join(str(p) for p in e["loc"] if p not in _EVENT_TAGS and p not in UNION_TAGS) or "line",
                    e["msg"])
            for e in error.errors(include_url=False)]


# The union's member tags (schemas.UNION_TAGS, e.g. "(user_purchase)") and, in the line models, the
# event types themselves: neither is a field of the line.
_EVENT_TAGS = {"user_purchase", "add_to_cart", "page_view", "login", "logout", "search"}


def _derived_id(*parts: object) -> str:
    digest = hashlib.sha1("\x1f".join(str(p) for p in parts).encode(), usedforsecurity=False).hexdigest()
    return f"bf-{digest[:40]}"


@dataclass
class Record:
    line: int
    user: str | int | None  # lower-case username, or a Pulse user id; None: a visitor's event (anonymous_id)
    event: EventMessage  # validated event, as the API publishes it


def _ndjson(path: Path, plan: Plan) -> Iterator[Record]:
    # An event line without a timestamp is dated when the file was last written, not when it is
    # read: a re-run then sends the very same event (same identity, same content), and the worker
    # recognises what a killed run stored (services.worker.storage.insert_events compares both).
    undated = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                plan.problems.append(Problem(number, "line", f"not JSON: {exc.msg}"))
                continue
            if not isinstance(obj, dict):
                plan.problems.append(Problem(number, "line", "must be a JSON object"))
                continue
            if "event_type" not in obj:
                _user_line(number, obj, plan)
                continue
            username = obj.pop("username", None)
            if username is not None and "user_id" not in obj:
                obj["user_id"] = 1  # validated below against the username instead
            try:
                event = SingleEvent.model_validate(obj).root
            except ValidationError as exc:
                plan.problems.extend(_problems(number, exc))
                continue
            if username is None and event.user_id is None and event.anonymous_id is None:
                plan.problems.append(Problem(number, "user_id", "user_id, username or anonymous_id is required"))
                continue
            event_id = event.event_id or _derived_id("ndjson", raw.strip())
            message = EventMessage.of(event, event_id, undated, received=False)
            yield Record(number, str(username).lower() if username is not None else event.user_id, message)


def _user_line(number: int, obj: dict[str, Any], plan: Plan) -> None:
    created_at = obj.pop("created_at", None)
    try:
        user = SignupRequest.model_validate(obj)
        created = datetime.fromisoformat(created_at) if created_at else None
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
    except ValidationError as exc:
        plan.problems.extend(_problems(number, exc))
        return
    except (TypeError, ValueError):
        plan.problems.append(Problem(number, "created_at", "not an ISO 8601 date or time"))
        return
    if country_by_code(user.address.country_code) is None:
        plan.problems.append(Problem(number, "address.country_code", "not an ISO 3166-1 alpha-2 country code"))
        return
    plan.users[user.username.lower()] = (user, created)


def _csv_date(value: str) -> datetime:
    value = value.strip()
    if len(value) == 8 and value.isdigit():
        value = f"{value[:4]}-{value[4:6]}-{value[6:]}"
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _csv(path: Path, plan: Plan, args: argparse.Namespace) -> Iterator[Record]:
    seen: dict[tuple[Any, ...], int] = {}
    address = {"street": args.street, "city": args.city, "country_code": args.country}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        missing = {"customer_id", "date", "amount"} - set(columns)
        if missing:
            plan.problems.append(Problem(1, "header", f"missing column(s): {', '.join(sorted(missing))}"))
            return
        for number, row in enumerate(reader, start=2):
            values = {name: (row.get(columns[name]) or "").strip() for name in columns}
            customer = values["customer_id"]
            username = f"{args.username_prefix}{customer}".lower()
            try:
                when = _csv_date(values["date"])
            except ValueError:
                plan.problems.append(Problem(number, "date", f"not a date: {values['date']!r}"))
                continue
            quantity = values.get("quantity") or None
            key = (customer, when.isoformat(), quantity, values["amount"])
            seen[key] = seen.get(key, 0) + 1
            # CSV holds text; the event schema wants numbers (as JSON would carry them).
            try:
                amount = float(values["amount"])
            except ValueError:
                plan.problems.append(Problem(number, "amount", f"not a number: {values['amount']!r}"))
                continue
            metadata = {"product_id": args.product_id, "price": amount, "category": args.category}
            if quantity is not None:
                try:
                    metadata["quantity"] = int(quantity)
                except ValueError:
                    plan.problems.append(Problem(number, "quantity", f"not a whole number: {quantity!r}"))
                    continue
            try:
                event = SingleEvent.model_validate({
                    "event_id": _derived_id("csv", *key, seen[key]), "user_id": 1, "event_type": "user_purchase",
                    "timestamp": when.isoformat(), "metadata": metadata,
                }).root
            except ValidationError as exc:
                plan.problems.extend(_problems(number, exc))
                continue
            if username not in plan.users:
                signup = {"username": username, "email": f"{username}@{args.email_domain}",
                          "full_name": f"Customer {customer}", "address": address}
                try:
                    plan.users[username] = (SignupRequest.model_validate(signup), when)
                except ValidationError as exc:
                    plan.problems += [Problem(number, "customer_id", f"gives an invalid {e['loc'][0]}: {e['msg']}")
                                      for e in exc.errors(include_url=False)]
                    continue
            elif when < (plan.users[username][1] or when):
                plan.users[username] = (plan.users[username][0], when)
            assert event.event_id is not None  # validated from the event_id derived above
            yield Record(number, username, EventMessage.of(event, event.event_id, when, received=False))


def records(path: Path, plan: Plan, args: argparse.Namespace) -> Iterator[Record]:
    if args.format == "csv":
        yield from _csv(path, plan, args)
    else:
        yield from _ndjson(path, plan)


def validate(path: Path, args: argparse.Namespace) -> Plan:
    plan = Plan()
    for record in tqdm(records(path, plan, args), desc="validating", unit=" events", unit_scale=True,
                       file=sys.stderr, disable=args.quiet):
        plan.events += 1
        if isinstance(record.user, int):
            plan.user_ids.add(record.user)
        elif record.user is not None:
            plan.usernames.add(record.user)
    return plan


# ----------------------------------------------------------------------------- writing


_ADDRESS_IDS = text("SELECT nextval(pg_get_serial_sequence('addresses', 'id')) FROM generate_series(1, :n)")
_INSERT_ADDRESSES = text(
    "INSERT INTO addresses (id, street, city_id) "
    "SELECT * FROM unnest(CAST(:ids AS integer[]), CAST(:streets AS text[]), CAST(:cities AS integer[]))"
)
_INSERT_USERS = text(
    """
    INSERT INTO users (username, email, full_name, address_id, created_at)
    SELECT * FROM unnest(CAST(:usernames AS text[]), CAST(:emails AS text[]), CAST(:names AS text[]),
                         CAST(:addresses AS integer[]), CAST(:created AS timestamptz[]))
    ON CONFLICT DO NOTHING
    """
)
_FIND_USERS = text("SELECT id, lower(username) AS username, email FROM users WHERE lower(username) = ANY(:names)")
_FIND_EMAILS = text("SELECT email, lower(username) AS username FROM users WHERE email = ANY(:emails)")


def import_users(plan: Plan, quiet: bool) -> tuple[dict[str, int], int, list[str]]:
    """Users of the file into Postgres (matched by username). Returns (lower-case username → id,
    how many were created, conflicts: users whose e-mail belongs to another username)."""
    ids: dict[str, int] = {}
    created = 0
    conflicts: list[str] = []
    names = sorted(plan.users)
    now = datetime.now(UTC)
    with tqdm(total=len(names), desc="users", unit=" users", unit_scale=True, file=sys.stderr, disable=quiet) as bar:
        for start in range(0, len(names), CHUNK):
            chunk = names[start:start + CHUNK]
            with session_scope() as session:
                existing = {row.username: row.id for row in session.execute(_FIND_USERS, {"names": chunk})}
                new = [name for name in chunk if name not in existing]
                emails = {row.email: row.username for row in session.execute(
                    _FIND_EMAILS, {"emails": [plan.users[n][0].email for n in new]})}
                conflicts += [n for n in new if emails.get(plan.users[n][0].email, n) != n]
                new = [n for n in new if emails.get(plan.users[n][0].email, n) == n]
                if new:
                    address_ids = list(session.scalars(_ADDRESS_IDS, {"n": len(new)}))
                    signups = [plan.users[n][0] for n in new]
                    cities = [resolve_city(session, s.address.city, country_by_code(s.address.country_code)[0])
                              for s in signups]
                    session.execute(_INSERT_ADDRESSES,
                                    {"ids": address_ids, "streets": [s.address.street for s in signups],
                                                        "cities": cities})
                    result = session.execute(_INSERT_USERS, {
                        "usernames": [s.username for s in signups], "emails": [s.email for s in signups],
                        "names": [s.full_name for s in signups], "addresses": address_ids,
                        "created": [plan.users[n][1] or now for n in new]})
                    created += rowcount(result)
                    existing.update({row.username: row.id for row in session.execute(_FIND_USERS, {"names": new})})
            ids.update(existing)
            bar.update(len(chunk))
    return ids, created, conflicts


def existing_users(usernames: list[str]) -> dict[str, int]:
    """Users the file's events name that are in Pulse already (lower-case username -> id)."""
    found: dict[str, int] = {}
    for start in range(0, len(usernames), CHUNK):
        with session_scope() as session:
            found.update({row.username: row.id for row in session.execute(
                _FIND_USERS, {"names": usernames[start:start + CHUNK]})})
    return found


def import_events(path: Path, args: argparse.Namespace, plan: Plan, users: dict[str, int]) -> dict[str, int]:
    from services.worker.storage import store_batch

    db = get_database()
    celery = create_celery_app("pulse-backfill")

    def schedule(delay: float) -> None:
        celery.send_task(COMPUTE_PROFILES, countdown=delay)

    with session_scope() as session:
        known = set(session.scalars(text("SELECT id FROM users WHERE id = ANY(:ids)"), {"ids": sorted(plan.user_ids)}))
    counts = {"stored": 0, "already stored": 0, "skipped": 0}
    pending: list[EventMessage] = []

    def flush() -> None:
        if not pending:
            return
        # From the events' identities (user and id: two users' chunks may share every event id).
        batch_id = _derived_id("batch", *(f"{e.user_id if e.user_id is not None else 'a:' + str(e.anonymous_id)}"
                                          f":{e.event_id}" for e in pending))
        received_at = datetime.now(UTC)
        stored = store_batch(db, batch_id, [e.document(received_at) for e in pending], schedule)
        counts["stored"] += stored.inserted
        counts["already stored"] += stored.received - stored.inserted
        pending.clear()

    ignored = Plan()  # the file was validated already: what a second read finds again is not new
    with tqdm(total=plan.events, desc="events", unit=" events", unit_scale=True, file=sys.stderr,
              disable=args.quiet) as bar:
        for record in records(path, ignored, args):
            if record.user is None:  # a visitor's event: the storage path resolves its person
                pending.append(record.event)
                if len(pending) == CHUNK:
                    flush()
                bar.update(1)
                continue
            user_id = record.user if isinstance(record.user, int) else users.get(record.user)
            if user_id is None or (isinstance(record.user, int) and user_id not in known):
                counts["skipped"] += 1  # reported by validation (--skip-invalid)
            else:
                pending.append(record.event.model_copy(update={"user_id": user_id}))
                if len(pending) == CHUNK:
                    flush()
            bar.update(1)
        flush()
    return counts


# What a backfill grows. After a bulk load the planner's statistics describe the tables as they
# were; autovacuum catches up within minutes where it runs, this makes it at once (and where it
# does not run at all, as on the dev machine).
GROWN_TABLES = ("users", "addresses", "activity_days", "purchase_days", "customer_summaries",
                "customer_categories", "category_sales", "rescore_pending", "applied_batches", "person_events")


def refresh_statistics() -> None:
    with session_scope() as session:
        for table in GROWN_TABLES:
            session.execute(text(f"ANALYZE {table}"))


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (PyMongoError, SQLAlchemyError, KombuError) as exc:
        print(f"backfill stopped: {type(exc).__name__}: {str(exc).splitlines()[0][:300]} (is the stack up? "
              "A re-run continues where this one stopped and stores nothing twice)", file=sys.stderr)
        return 1


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="pulse backfill", description=__doc__.split("\n\n")[0].partition(": ")[2])
    parser.add_argument("file", type=Path, help="NDJSON of users and events, or CSV of transactions")
    parser.add_argument("--format", choices=["ndjson", "csv"], help="default: from the file's extension")
    parser.add_argument("--skip-invalid", action="store_true", help="import the valid lines even if some are not")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    csv_options = parser.add_argument_group("CSV of transactions")
    csv_options.add_argument("--country", default=None, help="ISO country code of the customers' address")
    csv_options.add_argument("--city", default=None, help="city of the customers' address")
    csv_options.add_argument("--street", default="Unknown", help="street of the customers' address (default Unknown)")
    csv_options.add_argument("--username-prefix", default="customer_", help="username = prefix + customer_id")
    csv_options.add_argument("--email-domain", default="customers.example.com", help="e-mail = username@domain")
    csv_options.add_argument("--category", default="general", help="category of every purchase (default general)")
    csv_options.add_argument("--product-id", default="unknown", help="product id of every purchase")
    args = parser.parse_args(argv)
    args.format = args.format or ("csv" if args.file.suffix.lower() == ".csv" else "ndjson")
    if args.format == "csv" and not (args.country and args.city):
        parser.error("a CSV of transactions needs --country and --city for the customers' address")
    if not args.file.is_file():
        parser.error(f"not a file: {args.file}" if args.file.exists() else f"no such file: {args.file}")

    plan = validate(args.file, args)
    missing_users = sorted(plan.usernames - set(plan.users))
    if missing_users:
        found = existing_users(missing_users)
        plan.problems += [Problem(0, "username", f"no user {name!r} in the file or in Pulse")
                          for name in missing_users if name not in found]
    if plan.user_ids:
        with session_scope() as session:
            found_ids = set(session.scalars(text("SELECT id FROM users WHERE id = ANY(:ids)"),
                                            {"ids": sorted(plan.user_ids)}))
        plan.problems += [Problem(0, "user_id", f"no user with id {u}") for u in sorted(plan.user_ids - found_ids)]
    for problem in plan.problems[:50]:
        print(problem, file=sys.stderr)
    if len(plan.problems) > 50:
        print(f"... and {len(plan.problems) - 50} more", file=sys.stderr)
    if plan.problems and not args.skip_invalid:
        print(f"{len(plan.problems)} invalid line(s): nothing imported (fix them, or pass --skip-invalid)",
              file=sys.stderr)
        return 1

    prepare_database()
    users, created, conflicts = import_users(plan, args.quiet)
    users.update(existing_users(sorted(plan.usernames - set(users))))
    for name in conflicts[:20]:
        print(f"user {name!r}: its e-mail belongs to another user; not imported", file=sys.stderr)
    counts = import_events(args.file, args, plan, users)
    refresh_statistics()
    print(f"users: {len(plan.users):,} in the file, {created:,} created, {len(conflicts):,} in conflict; "
          f"events: {counts['stored']:,} stored, {counts['already stored']:,} already stored, "
          f"{counts['skipped']:,} skipped; {len(plan.problems):,} invalid line(s)")
    return 1 if plan.problems or conflicts or counts["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
