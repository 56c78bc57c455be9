"""`pulse keys`: create, list and revoke API keys; `dev FILE` keeps a development key in FILE.
The keys themselves (hashing, scopes, revocation) are shared.infra.api_keys."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from shared.infra.api_keys import (
    KEY_FORMAT,
    SCOPES,
    announce_revocation,
    create,
    ensure_dev_key,
    list_keys,
    revoke,
    status,
)


def main(argv: list[str] | None = None) -> int:
    from shared.infra.db import session_scope

    parser = argparse.ArgumentParser(
        prog="pulse keys",
        description="API keys: create, list, revoke; dev FILE keeps a development key in FILE.")
    commands = parser.add_subparsers(dest="command", required=True)
    create_cmd = commands.add_parser("create", help="create a key and print it (the only time it is shown)")
    create_cmd.add_argument("--scope", action="append", choices=SCOPES, required=True, dest="scopes",
                            help="a scope of the key (repeatable; admin does not imply read)")
    create_cmd.add_argument("--name", default="", help="who or what the key is for, shown in listings")
    create_cmd.add_argument("--expires-at", type=datetime.fromisoformat,
                            help="when the key stops working: ISO 8601 with an offset (default never)")
    commands.add_parser("list", help="every key with its scopes and status (never the key itself)")
    revoke_cmd = commands.add_parser("revoke", help="revoke a key by its id")
    revoke_cmd.add_argument("key_id", help="the key's id (12 hex digits, as `list` shows it)")
    dev_cmd = commands.add_parser("dev", help="make sure FILE holds a working development key (every scope)")
    dev_cmd.add_argument("file", type=Path, help="where the key is kept (owner-only file)")
    args = parser.parse_args(argv)

    with session_scope() as session:
        if args.command == "create":
            expires_at = args.expires_at
            if expires_at is not None and expires_at.tzinfo is None:
                parser.error("--expires-at needs a UTC offset, e.g. 2027-01-31T00:00:00+00:00")
            row, key = create(session, args.scopes, args.name, expires_at)
            print(key)
            print(f"key id {row.id}, scopes {','.join(row.scopes)}: store it now, it is not shown again",
                  file=sys.stderr)
        elif args.command == "list":
            for row in list_keys(session):
                print(f"{row.id}  {status(row):8}  {','.join(row.scopes):18}  "
                      f"expires {row.expires_at.isoformat() if row.expires_at else 'never':26}  {row.name}")
        elif args.command == "revoke":
            if not revoke(session, args.key_id):
                print(f"no key with id {args.key_id}", file=sys.stderr)
                return 1
            session.commit()  # before the announcement: a process that looks again must see it revoked
            if announce_revocation(args.key_id):
                print(f"revoked {args.key_id}: refused by every API process from its next request on")
            else:
                print(f"revoked {args.key_id}; Redis is unreachable, so API processes that checked it refuse it "
                      "within API_KEY_CACHE_SECONDS", file=sys.stderr)
        else:
            key, created = ensure_dev_key(session, args.file)
            match = KEY_FORMAT.fullmatch(key)
            if match is None:  # not reached: a key the database knows, or a new one; said, never a crash
                print(f"{args.file} holds no Pulse key", file=sys.stderr)
                return 1
            key_id = match.group(1)
            what = "created a development key" if created else "development key"
            print(f"{what} (id {key_id}, scopes {','.join(SCOPES)}) in {args.file}: "
                  f"curl -H \"Authorization: Bearer $(cat {args.file})\" ...; the dashboard at /dashboard takes it too")
    return 0
