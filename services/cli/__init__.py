"""`pulse`: the operator's one command (console script `pulse = "services.cli:main"`).

    pulse keys create|list|revoke|dev ...   API keys                         (services.cli.keys)
    pulse summaries rebuild [--check]       recount counters and summaries   (services.cli.summaries)
    pulse dead-letters list|replay|purge    tasks that failed for good       (services.cli.dead_letters)
    pulse backfill FILE ...                 import a history                 (services.worker.backfill)
    pulse migrate                           create/upgrade the database      (shared.infra.migrate)
    pulse demo | chaos | population | flower-login   dev tools of a checkout (scripts/)

Decisions (issue 22):

* An entry point, as cosmicpython's `entrypoints`: it sits beside the services and may import
  shared/, each service's command module and scripts/, and nothing imports it.
* Every import is lazy, inside the subcommand: `pulse --help` loads no dependency at all and
  `pulse keys` does not load numpy, the analytics or Celery.
* One parser per command: each subcommand hands the rest of the command line to a `main(argv)`,
  whose argparse parser (prog `pulse <command>`) owns the options and the `--help`. The operator
  commands of shared/ live here (keys.py, summaries.py, dead_letters.py), beside the library code
  they call, so no library module carries a command line; a service's own tool stays in the
  service (`services.worker.backfill`, which runs the worker's storage path). argparse rather than
  click: nothing to declare here but a name, a summary and where `main` lives, and no dependency
  to add.
* The dev tools in scripts/ (demo, chaos, population, flower-login) exist only in a checkout: the
  wheel packages shared* and services*. Outside one, such a command says so and exits 2.
* Errors without tracebacks. An expected failure (a store unreachable, a missing file, an unknown
  key) is one line on stderr and exit status 1; a usage error is argparse's, exit status 2; an
  unexpected exception is one line naming it and PULSE_DEBUG=1, which re-raises it (traceback).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# services/cli/__init__.py -> the directory holding services/ (a checkout, or site-packages).
ROOT = Path(__file__).resolve().parents[2]

EPILOG = """\
Each command has its own --help (e.g. `pulse keys create --help`).
Settings come from the environment and .env: DATABASE_URL, BROKER_URL, MONGO_URI, REDIS_URL, ...

exit status:
  0    done
  1    the command failed: a store unreachable, a file or key or task not found, drift found
       (summaries rebuild --check), invalid lines (backfill), or an unexpected error
  2    usage error: unknown command or option, missing argument; or a dev tool outside a checkout
  130  interrupted (Ctrl-C)

PULSE_DEBUG=1 shows the traceback of an error instead of its one line.
"""


@dataclass(frozen=True)
class Command:
    name: str
    target: str  # "module:function", the function taking argv (the rest of the command line)
    summary: str
    checkout_only: bool = False  # a dev tool in scripts/: not in the wheel

    def load(self):
        module_name, _, function = self.target.partition(":")
        if self.checkout_only:
            script = ROOT.joinpath(*module_name.split(".")).with_suffix(".py")
            if not script.is_file():
                raise CheckoutMissing(
                    f"{self.name} is a development tool that lives in scripts/ of a checkout of Pulse, and this "
                    f"pulse is installed without one ({ROOT}); run it from a checkout (scripts/setup, then "
                    f".venv/bin/pulse {self.name})")
            # A console script's sys.path starts at its bin/, not at the checkout that holds scripts/.
            if str(ROOT) not in sys.path:
                sys.path.insert(0, str(ROOT))
        return getattr(importlib.import_module(module_name), function)


class CheckoutMissing(Exception):
    pass


COMMANDS = {c.name: c for c in (
    Command("keys", "services.cli.keys:main",
            "API keys: create, list, revoke; dev FILE makes sure FILE holds a working development key"),
    Command("summaries", "services.cli.summaries:main",
            "rebuild [--check]: recount activity counters and customer summaries from MongoDB events"),
    Command("dead-letters", "services.cli.dead_letters:main",
            "list, replay or purge the tasks that failed for good"),
    Command("backfill", "services.worker.backfill:main",
            "FILE: import a history of users and events (NDJSON, or CSV of transactions)"),
    Command("migrate", "shared.infra.migrate:main",
            "create the database when missing, then upgrade it to the newest revision"),
    Command("demo", "scripts.demo:main",
            "replay the guide's scenarios against the running stack (checkout only)", checkout_only=True),
    Command("chaos", "scripts.chaos:main",
            "mixed load under faults on a private stack, then a reconciliation (checkout only)",
            checkout_only=True),
    Command("population", "scripts.population:main",
            "OUT.ndjson: write a simulated history of customers and purchases (checkout only)",
            checkout_only=True),
    Command("flower-login", "scripts.flower:login",
            "FILE: make sure FILE holds Flower's login, print where it is (checkout only)", checkout_only=True),
)}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="pulse", description="Operate Pulse: keys, summaries, dead letters, backfill, migrations, dev tools.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        commands.add_parser(command.name, help=command.summary, add_help=False)
    return top


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] not in COMMANDS:
        parser().parse_args(args)  # --help (exit 0) or a usage error (exit 2); a command name is dispatched below
        return 2
    return run(COMMANDS[args[0]], args[1:])


def run(command: Command, argv: list[str]) -> int:
    where = f"pulse {command.name}"
    try:
        return command.load()(argv) or 0
    except CheckoutMissing as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`pulse dead-letters list | head`): what is left for stdout goes nowhere,
        # so the flush at exit does not fail again (the recipe of Python's signal documentation).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if os.environ.get("PULSE_DEBUG"):
            raise
        expected = expected_failure(exc)
        if expected:
            print(f"{where}: {expected}", file=sys.stderr)
        else:
            print(f"{where}: unexpected error: {type(exc).__name__}: {first_line(exc)} "
                  "(PULSE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else "(no message)"


def expected_failure(exc: Exception) -> str | None:
    """One line for a failure an operator can act on, else None.

    Looked up in sys.modules, not imported: an exception of a library can only come from a library
    already loaded, and a failure must not load more.
    """
    def raised(module: str, *names: str) -> bool:
        loaded = sys.modules.get(module)
        return loaded is not None and isinstance(exc, tuple(getattr(loaded, n) for n in names))

    # psycopg's own: shared.infra.db.ensure_database connects without SQLAlchemy.
    if raised("sqlalchemy.exc", "OperationalError", "InterfaceError") or raised("psycopg", "OperationalError",
                                                                                 "InterfaceError"):
        return f"cannot use Postgres: {first_line(exc)} (is it up, and is DATABASE_URL right?)"
    if raised("sqlalchemy.exc", "ProgrammingError"):
        return f"Postgres refused: {first_line(exc)} (has `pulse migrate` run?)"
    if raised("sqlalchemy.exc", "SQLAlchemyError") or raised("psycopg", "Error"):
        return f"Postgres: {first_line(exc)}"
    if raised("pymongo.errors", "PyMongoError"):
        return f"cannot use MongoDB: {first_line(exc)} (is it up, and is MONGO_URI right?)"
    if raised("kombu.exceptions", "KombuError") or raised("amqp.exceptions", "AMQPError"):
        return f"cannot use RabbitMQ: {first_line(exc)} (is it up, and is BROKER_URL right?)"
    if raised("redis.exceptions", "RedisError"):
        return f"cannot use Redis: {first_line(exc)} (is it up, and is REDIS_URL right?)"
    if raised("pydantic_core", "ValidationError") and getattr(exc, "title", "") == "Settings":
        error = exc.errors()[0]  # type: ignore[attr-defined]  # a pydantic ValidationError (raised() above)
        setting = ".".join(str(part) for part in error["loc"]).upper()
        return f"invalid setting {setting}: {error['msg']} (see .env and the environment)"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text: byte {exc.start} cannot be read ({exc.reason}); is it the right file?"
    if isinstance(exc, ConnectionError):
        return f"cannot connect: {first_line(exc)}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return None
