"""Flower behind a login, also natively (`make dev`): it shows every task's state and errors, and
an error may quote what a task held (an address an SMTP server refused).

    pulse flower-login FILE                    make sure FILE holds a login, print where it is
    python -m scripts.flower run FILE [ARGS]   run Flower (celery flower ARGS) asking for that login
                                               (the Procfile's; `login FILE` is pulse flower-login)

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


def configured_login(path: Path) -> tuple[str, bool, str]:
    """FLOWER_BASIC_AUTH when set, else the login in FILE. Returns (user:password, created, where)."""
    if os.environ.get("FLOWER_BASIC_AUTH"):
        return os.environ["FLOWER_BASIC_AUTH"], False, "FLOWER_BASIC_AUTH"
    login, created = ensure_login(path)
    return login, created, str(path)


def login(argv: list[str] | None = None) -> int:
    """`pulse flower-login FILE`."""
    parser = argparse.ArgumentParser(prog="pulse flower-login",
                                     description="Make sure FILE holds the login Flower asks for; print where it is.",
                                     epilog="FLOWER_BASIC_AUTH (user:password), when set, is the login instead.")
    parser.add_argument("file", type=Path, help="where the login is kept (user:password, owner-only file)")
    args = parser.parse_args(argv)
    announce(*configured_login(args.file))
    return 0


def announce(credentials: str, created: bool, where: str) -> None:
    print(f"{'created a Flower login' if created else 'Flower login'} (user {credentials.partition(':')[0]}) "
          f"in {where}: open Flower with user and password from there")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.flower", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["login", "run"])
    parser.add_argument("file", type=Path)
    args, flower_args = parser.parse_known_args(argv)
    credentials, created, where = configured_login(args.file)
    if args.command == "login":
        announce(credentials, created, where)
        return 0
    # Through the environment, not the command line: `ps` shows every process's arguments.
    env = {**os.environ, "FLOWER_BASIC_AUTH": credentials}
    celery = str(Path(sys.executable).parent / "celery")
    os.execve(celery, [celery, "-A", "services.worker.main", "flower", *flower_args], env)


if __name__ == "__main__":
    sys.exit(main())
