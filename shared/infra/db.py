"""SQLAlchemy engine/session per process, and creation of the database when it is missing."""
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

import psycopg
from psycopg import sql
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, CursorResult, Result, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from shared.contracts.settings import get_settings
from shared.infra import tracing

CONNECT_ARGS = {
    # An unreachable server is an error (503, a retry) in seconds, not a request that hangs.
    "connect_timeout": 5,
    # Every statement planned for its own parameters. psycopg prepares a statement after five
    # runs, and Postgres may then switch it to a generic plan: for `user_id = ANY($1)` over tables
    # whose statistics are stale (autovacuum off, as on the dev machine, or behind after a bulk
    # load) that plan scans the table, and a profile miss grew from 12 to 23 ms between 1,000 and
    # 100,000 purchases (bench/scale.py's Server-Timing showed it all in the summary reads).
    # Planning these small statements costs well under a millisecond.
    "prepare_threshold": None,
}


def get_engine(url: str | None = None) -> Engine:
    return _engine(url or get_settings().database_url)


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    engine = create_engine(
        url,
        pool_pre_ping=True,  # a Postgres restart must not turn the next request into a 500
        pool_size=5,
        max_overflow=10,
        connect_args=CONNECT_ARGS,
    )
    tracing.instrument_engine(engine)  # statement spans when tracing is on (configured before)
    return engine


@lru_cache(maxsize=4)
def unpooled_engine(url: str | None = None) -> Engine:
    """An engine that keeps no connection between uses: for code that may run in a process that
    forks afterwards (Celery's worker main process), where a pooled connection would be shared."""
    engine = create_engine(url or get_settings().database_url, poolclass=NullPool, connect_args=CONNECT_ARGS)
    tracing.instrument_engine(engine)
    return engine


@lru_cache(maxsize=4)
def _session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    session = _session_factory(get_engine(url))()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def rowcount(result: Result[Any]) -> int:
    """The rows an INSERT, UPDATE or DELETE matched. SQLAlchemy types Session.execute as returning
    Result, which has no rowcount; for those statements it is a CursorResult at run time."""
    return cast(CursorResult[Any], result).rowcount


def _database_name(url: URL) -> str:
    """The database a URL names; one without a name cannot be created or dropped."""
    if url.database is None:
        raise ValueError(f"the database URL {url!r} names no database")
    return url.database


def ensure_database(url: str | None = None) -> bool:
    """Create the database named in the URL when it does not exist. Returns True if created."""
    target = make_url(url or get_settings().database_url)
    name = _database_name(target)
    admin = target.set(database="postgres", drivername="postgresql")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:  # created by a concurrent starter
            return False
        return True


def drop_database(url: str) -> None:
    target = make_url(url)
    name = _database_name(target)
    admin = target.set(database="postgres", drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )
