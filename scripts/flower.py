"""Flower behind a login, also natively (`make dev`): it shows every task's state and errors, and
an error may quote what a task held (an address an SMTP server refused).

    python -m scripts.flower login FILE        make sure FILE holds a login, print where it is
    python -m scripts.flower run FILE [ARGS]   run Flower (celery flower ARGS) asking for that login

The login is FLOWER_BASIC_AUTH (user:password) when set, as compose sets it from .env; otherwise
`user:password` from FILE, created with a random password (owner-only file) when missing, as the
development API key is. Flower never starts without one: no path leaves it open. Task arguments
are not shown either way (shared.infra.celery_app.arguments_shown: ids only).
"""
import argparse
import os
import secrets
import sys
from pathlib import Path

from shared.infra.api_keys import write_secret_file

USER = "pulse"


def ensure_login(path: Path) -> tuple[str, bool]:
    """The login in FILE (kept when well-formed), else a new one. Returns (user:password, created)."""
    if path.exists():
        login = path.read_text().strip()
        user, _, password = login.partition(":")
        if user and len(password) >= 16:
            os.chmod(path, 0o600)
            return login, False
    login = f"{USER}:{secrets.token_urlsafe(18)}"
    write_secret_file(path, login)
    return login, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.flower", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["login", "run"])
    parser.add_argument("file", type=Path)
    args, flower_args = parser.parse_known_args(argv)
    if os.environ.get("FLOWER_BASIC_AUTH"):
        login, created, where = os.environ["FLOWER_BASIC_AUTH"], False, "FLOWER_BASIC_AUTH"
    else:
        login, created = ensure_login(args.file)
        where = str(args.file)
    if args.command == "login":
        print(f"{'created a Flower login' if created else 'Flower login'} (user {login.partition(':')[0]}) "
              f"in {where}: open Flower with user and password from there")
        return 0
    # Through the environment, not the command line: `ps` shows every process's arguments.
    env = {**os.environ, "FLOWER_BASIC_AUTH": login}
    celery = str(Path(sys.executable).parent / "celery")
    os.execve(celery, [celery, "-A", "services.worker.main", "flower", *flower_args], env)


if __name__ == "__main__":
    sys.exit(main())
