"""MongoDB access: one client per process, the collections Pulse uses and their indexes.

Product code only speaks pymongo to MONGO_URI, so a real MongoDB and the dev server behave alike.
"""
from functools import lru_cache
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.database import Database

from shared.contracts.settings import get_settings

EVENTS = "events"
PROFILES = "profiles"
WELCOME_EMAILS = "welcome_emails"
FITTED_MODELS = "fitted_models"
# One document, replaced by the analytics worker: the customer distributions of the dashboard.
CUSTOMER_STATS = "customer_stats"

# pymongo's default document type: what find() and friends return.
Document = dict[str, Any]


# How long an operation waits for the server: while MongoDB is down, each try of a task that
# needs it holds its worker slot this long before it fails (and is retried).
SERVER_SELECTION_TIMEOUT_SECONDS = 5.0


@lru_cache(maxsize=4)
def get_client(uri: str | None = None) -> MongoClient[Document]:
    return MongoClient(
        uri or get_settings().mongo_uri,
        tz_aware=True,
        serverSelectionTimeoutMS=int(SERVER_SELECTION_TIMEOUT_SECONDS * 1000),
        retryWrites=False,  # the dev server runs standalone; our writes are idempotent anyway
    )


def get_database(uri: str | None = None) -> Database[Document]:
    uri = uri or get_settings().mongo_uri
    return get_client(uri).get_default_database(default="pulse")


def ensure_indexes(db: Database[Document]) -> None:
    """Idempotent: create_index is a no-op when the same index exists. The data of older
    versions is upgraded first (shared.infra.mongo_upgrades), so the indexes are made on the
    shape they describe."""
    from shared.infra.mongo_upgrades import upgrade  # it names the collections defined here

    upgrade(db)
    # An event is `(user_id, event_id)` (shared.contracts.event_identity); user first, the prefix
    # a shard key `{user_id: "hashed"}` needs.
    db[EVENTS].create_index([("user_id", ASCENDING), ("event_id", ASCENDING)], unique=True, name="uq_user_event")
    db[EVENTS].create_index(
        [("user_id", ASCENDING), ("timestamp", DESCENDING)], name="ix_user_time"
    )
    # Serves "purchases of these users" and the category aggregation's $match on event_type.
    db[EVENTS].create_index([("event_type", ASCENDING), ("user_id", ASCENDING)], name="ix_type_user")
    # Profiles: `_id` = `user_id` and no other index (shared.infra.mongo_upgrades.key_profiles_by_user).
    db[FITTED_MODELS].create_index([("version", DESCENDING)], unique=True, name="uq_version")


def prepare_database(uri: str | None = None, timeout: float = 60.0) -> None:
    """Create the indexes at process start, waiting for the server (it may start alongside us).

    Uses a client of its own and closes it: Celery forks its pool after this, and a MongoClient
    must not cross a fork.
    """
    uri = uri or get_settings().mongo_uri
    client: MongoClient[Document] = MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000))
    try:
        ensure_indexes(client.get_default_database(default="pulse"))
    finally:
        client.close()
