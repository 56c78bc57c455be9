"""`pulse summaries rebuild [--check]`: recount activity counters, customer summaries and
person_events from MongoDB events (the recount itself is shared.pipeline.summaries)."""
from __future__ import annotations

import argparse
import sys

from pymongo.errors import PyMongoError
from sqlalchemy.exc import SQLAlchemyError

from shared.pipeline.summaries import check, rebuild


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (PyMongoError, SQLAlchemyError) as exc:
        print(f"cannot recount: {type(exc).__name__}: {str(exc).splitlines()[0][:300]} "
              "(is the stack's MongoDB and Postgres up?)", file=sys.stderr)
        return 1


def _main(argv: list[str] | None) -> int:
    from tqdm import tqdm

    from shared.infra.db import session_scope
    from shared.infra.mongo import get_database

    parser = argparse.ArgumentParser(
        prog="pulse summaries",
        description="Recount activity counters, customer summaries and person_events from MongoDB events "
        "(run on a quiet stack).",
    )
    parser.add_argument("command", choices=["rebuild"], help="replace the tables with a recount")
    parser.add_argument("--check", action="store_true",
                        help="change nothing: report every row that differs from a recount (exit status 1 on drift)")
    parser.add_argument("--user", type=int, action="append", dest="users", metavar="ID",
                        help="only this user (repeatable)")
    args = parser.parse_args(argv)
    args.command = "check" if args.check else "rebuild"
    db = get_database()
    with tqdm(desc="events read", unit=" events", unit_scale=True, file=sys.stderr) as bar:
        def progress(read: int) -> None:
            bar.update(read - bar.n)

        with session_scope() as session:
            if args.command == "rebuild":
                written = rebuild(db, session, args.users, progress)
            else:
                drifts = check(db, session, args.users, progress)
                session.rollback()
    if args.command == "rebuild":
        from shared.pipeline import data_version

        data_version.changed("rebuild")  # committed above: insight answers cached before may differ
        print("rebuilt from MongoDB events: " + ", ".join(f"{name} {n:,}" for name, n in written.items()))
        return 0
    total = sum(d.rows for d in drifts)
    for drift in drifts:
        status = "ok" if not drift.rows else (f"DRIFT: {drift.missing} missing, {drift.extra} extra, "
                                               f"{drift.different} different")
        print(f"{drift.table:<20} {status}")
        for example in drift.examples:
            print(f"    {example}")
    print("no drift" if not total else f"{total} rows differ from a recount of MongoDB events")
    return 1 if total else 0
