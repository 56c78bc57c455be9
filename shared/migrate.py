"""`python -m shared.migrate`: create the database when missing, then upgrade to the newest revision."""
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.db import ensure_database
from shared.settings import get_settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None) -> None:
    url = url or get_settings().database_url
    ensure_database(url)
    command.upgrade(alembic_config(url), "head")


if __name__ == "__main__":
    upgrade()
