"""`pulse dead-letters`: list, replay or purge the tasks that failed for good (the queue itself
is shared.infra.dead_letters)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from shared.infra.dead_letters import DeadLetterQueue, print_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pulse dead-letters",
        description="List, replay or purge the tasks that failed for good (the dead-letter queue).")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="each dead letter: task, queue, reason, age, first error")
    listing.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    listing.add_argument("--limit", type=int, default=None, help="at most this many (default every one)")
    for name, what in (("replay", "publish again into the queue it died in"), ("purge", "delete for good")):
        command = commands.add_parser(name, help=what)
        command.add_argument("task_ids", nargs="*", metavar="task-id", help="task ids, as `list` shows them")
        command.add_argument("--all", action="store_true", help="every dead letter (instead of task ids)")
    args = parser.parse_args(argv)

    if args.command in ("replay", "purge") and bool(args.task_ids) == args.all:
        parser.error(f"{args.command}: name task ids or give --all (not both)")
    try:
        with DeadLetterQueue() as dlq:
            if args.command == "list":
                letters = dlq.letters(args.limit)
                if args.json:
                    print(json.dumps([asdict(letter) for letter in letters], indent=2))
                else:
                    print_table(letters)
            elif args.command == "replay":
                replayed = dlq.replay(None if args.all else args.task_ids)
                print(f"replayed {len(replayed)} message(s): {', '.join(replayed) or '-'}")
            else:
                print(f"purged {dlq.purge(None if args.all else args.task_ids)} message(s)")
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot reach the broker: {exc}", file=sys.stderr)
        return 1
    return 0
