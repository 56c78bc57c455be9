"""Hot reference data (countries, cities) behind in-process LRU caches, the guide's way.

Countries are a fixed ISO list and a city's id never changes once created, so entries never go
stale; the caches are per process and their hit/miss counters are exposed at /api/stats/cache.
"""
from functools import lru_cache

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.contracts.tables import City, Country
from shared.infra.db import get_engine


@lru_cache(maxsize=512)
def country_by_code(code: str, database_url: str | None = None) -> tuple[int, str] | None:
    with get_engine(database_url).connect() as conn:
        row = conn.execute(select(Country.id, Country.name).where(Country.code == code)).first()
    return (row.id, row.name) if row else None


@lru_cache(maxsize=4096)
def _city_id(name: str, country_id: int, database_url: str | None) -> int:
    # A miss raises instead of returning None: lru_cache does not keep exceptions, so a city
    # created a moment later is found next time rather than hidden behind a cached "absent".
    with get_engine(database_url).connect() as conn:
        city_id = conn.scalar(
            select(City.id)
            .where(func.lower(City.name) == name.lower(), City.country_id == country_id)
            .order_by(City.id)
            .limit(1)
        )
    if city_id is None:
        raise LookupError(name)
    return city_id


def resolve_city(session: Session, name: str, country_id: int, database_url: str | None = None) -> int:
    """The id of the city, created when new. Concurrent creators meet at the unique constraint."""
    try:
        return _city_id(name, country_id, database_url)
    except LookupError:
        pass
    created: int | None = session.scalar(
        insert(City)
        .values(name=name, country_id=country_id)
        .on_conflict_do_nothing(constraint="uq_cities_name_country")
        .returning(City.id)
    )
    if created is not None:
        return created  # not cached until committed elsewhere: a rollback would leave a dead id
    existing = session.scalar(select(City.id).where(City.name == name, City.country_id == country_id))
    # The insert did nothing only because this row exists (a concurrent creator's, committed
    # before the conflict was decided), and cities are never deleted.
    assert existing is not None
    return existing


def cache_stats() -> dict[str, dict[str, int | None]]:
    # maxsize is None for an unbounded lru_cache (functools' own type).
    stats: dict[str, dict[str, int | None]] = {}
    for name, fn in (("countries", country_by_code), ("cities", _city_id)):
        info = fn.cache_info()
        stats[name] = {
            "hits": info.hits,
            "misses": info.misses,
            "size": info.currsize,
            "maxsize": info.maxsize,
        }
    return stats
