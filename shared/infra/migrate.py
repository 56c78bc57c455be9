"""`pulse migrate`: create the database when missing, then upgrade to the newest revision."""
import argparse
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.contracts.settings import get_settings
from shared.infra.db import ensure_database

MIGRATIONS = Path(__file__).resolve().parent.parent / "contracts" / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None) -> None:
    url = url or get_settings().database_url
    ensure_database(url)
    command.upgrade(alembic_config(url), "head")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="pulse migrate",
                            description="Create the database when missing, then upgrade it to the newest revision.",
                            epilog="The database is DATABASE_URL's (environment or .env).").parse_args(argv)
    upgrade()
    return 0


if __name__ == "__main__":
    sys.exit(main())
