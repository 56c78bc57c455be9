"""MongoDB access: one client per process, the collections Pulse uses and their indexes.

Product code only speaks pymongo to MONGO_URI, so a real MongoDB and the dev server behave alike.
"""
from functools import lru_cache

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.database import Database
from pymongo.errors import BulkWriteError, OperationFailure

from shared.contracts.settings import get_settings

EVENTS = "events"
PROFILES = "profiles"
WELCOME_EMAILS = "welcome_emails"
MODELS = "models"
# One document, replaced by the analytics worker: the customer distributions of the dashboard.
CUSTOMER_STATS = "customer_stats"


# How long an operation waits for the server: while MongoDB is down, each try of a task that
# needs it holds its worker slot this long before it fails (and is retried).
SERVER_SELECTION_TIMEOUT_SECONDS = 5.0


@lru_cache(maxsize=4)
def get_client(uri: str | None = None) -> MongoClient:
    return MongoClient(
        uri or get_settings().mongo_uri,
        tz_aware=True,
        serverSelectionTimeoutMS=int(SERVER_SELECTION_TIMEOUT_SECONDS * 1000),
        retryWrites=False,  # the dev server runs standalone; our writes are idempotent anyway
    )


def get_database(uri: str | None = None) -> Database:
    uri = uri or get_settings().mongo_uri
    return get_client(uri).get_default_database(default="pulse")


def ensure_indexes(db: Database) -> None:
    """Idempotent: create_index is a no-op when the same index exists."""
    _key_events_by_user_and_id(db)
    db[EVENTS].create_index(
        [("user_id", ASCENDING), ("timestamp", DESCENDING)], name="ix_user_time"
    )
    _key_profiles_by_user(db)
    # Serves "purchases of these users" and the category aggregation's $match on event_type.
    db[EVENTS].create_index([("event_type", ASCENDING), ("user_id", ASCENDING)], name="ix_type_user")
    db[MODELS].create_index([("version", DESCENDING)], unique=True, name="uq_version")


def _key_events_by_user_and_id(db: Database) -> None:
    """An event is identified by `(user_id, event_id)` (shared.contracts.event_identity): the unique index
    is on the pair, user first (the prefix a shard key `{user_id: "hashed"}` needs). Databases of
    an older version hold the global `uq_event_id`; every event id in them is unique, so every
    pair is too, and the new index builds on the data as it is. It is built before the old one is
    dropped, so there is no moment without a unique key. Nothing in the product looks events up
    by `event_id` alone, so no index on it is kept: ingestion pays for the same number of
    indexes as before."""
    db[EVENTS].create_index([("user_id", ASCENDING), ("event_id", ASCENDING)], unique=True, name="uq_user_event")
    if "uq_event_id" in db[EVENTS].index_information():
        try:
            db[EVENTS].drop_index("uq_event_id")
        except OperationFailure:  # dropped by a process starting alongside
            pass


def _key_profiles_by_user(db: Database) -> None:
    """Profile documents are keyed by user id (`_id` = `user_id`), with no other index: analytics
    replaces hundreds of them per rescoring batch, and on the dev server a replacement costs half
    as much with one index as with three (`_id`, a unique `user_id`, `segment`; the segment counts
    scan the collection whichever way). Documents of an older version, with an ObjectId `_id`,
    are moved once, at the first start after the upgrade; then the old indexes go."""
    indexes = db[PROFILES].index_information()
    if "uq_user_id" not in indexes and "ix_segment" not in indexes:
        return
    for name in ("uq_user_id", "ix_segment"):
        try:
            db[PROFILES].drop_index(name)
        except OperationFailure:  # dropped by a process starting alongside
            pass
    while batch := list(db[PROFILES].find({"_id": {"$type": "objectId"}}).limit(1000)):
        try:
            db[PROFILES].insert_many([{**doc, "_id": doc["user_id"]} for doc in batch], ordered=False)
        except BulkWriteError as exc:
            # With only the `_id` index left, a duplicate is a document already keyed by the user:
            # moved by a process starting alongside, or newer. Either way the old one can go.
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
        db[PROFILES].delete_many({"_id": {"$in": [doc["_id"] for doc in batch]}})


def prepare_database(uri: str | None = None, timeout: float = 60.0) -> None:
    """Create the indexes at process start, waiting for the server (it may start alongside us).

    Uses a client of its own and closes it: Celery forks its pool after this, and a MongoClient
    must not cross a fork.
    """
    uri = uri or get_settings().mongo_uri
    client = MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000))
    try:
        ensure_indexes(client.get_default_database(default="pulse"))
    finally:
        client.close()
