"""Data upgrades of MongoDB, run at every process start before the indexes are made
(shared.infra.mongo.ensure_indexes).

Each step names the version it upgrades from (the Alembic head of the installations that still
have that shape) and is idempotent: it finds nothing to do once done, and two processes starting
together may both run it. There is no record of which steps ran: each looks at the data itself,
so a step interrupted by a crash is completed at the next start.
"""
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, OperationFailure

from shared.infra.logging import get_logger
from shared.infra.mongo import EVENTS, FITTED_MODELS, PROFILES

log = get_logger(__name__)

# What the fitted models' collection was called up to migration 0010.
LEGACY_FITTED_MODELS = "models"
_DUPLICATE_KEY = 11000
_PAGE = 1000


@dataclass(frozen=True)
class Upgrade:
    since: str  # the Alembic head of the installations this step upgrades
    run: Callable[[Database[Any]], None]


def _ignoring_duplicates(collection: Collection[Any], documents: list[dict[str, Any]]) -> None:
    # A document already there was copied by a process starting alongside, or by an interrupted
    # earlier start: the same document, so the copy can go.
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != _DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise


def key_profiles_by_user(db: Database[Any]) -> None:
    """Profile documents are keyed by user id (`_id` = `user_id`), with no other index: analytics
    replaces hundreds of them per rescoring batch, and on the dev server a replacement costs half
    as much with one index as with three (`_id`, a unique `user_id`, `segment`; the segment counts
    scan the collection whichever way). Documents of the older shape, with an ObjectId `_id`, are
    moved; then the old indexes go."""
    indexes = db[PROFILES].index_information()
    if "uq_user_id" not in indexes and "ix_segment" not in indexes:
        return
    for name in ("uq_user_id", "ix_segment"):
        try:
            db[PROFILES].drop_index(name)
        except OperationFailure:  # dropped by a process starting alongside
            pass
    while batch := list(db[PROFILES].find({"_id": {"$type": "objectId"}}).limit(_PAGE)):
        # With only the `_id` index left, a duplicate is a document already keyed by the user:
        # moved by a process starting alongside, or newer. Either way the old one can go.
        _ignoring_duplicates(db[PROFILES], [{**doc, "_id": doc["user_id"]} for doc in batch])
        db[PROFILES].delete_many({"_id": {"$in": [doc["_id"] for doc in batch]}})


def key_events_by_user_and_id(db: Database[Any]) -> None:
    """An event is identified by `(user_id, event_id)` (shared.contracts.event_identity); older
    installations hold the global unique `uq_event_id`. Every event id in them is unique, so
    every pair is too, and the new index builds on the data as it is. It is built before the old
    one is dropped, so there is no moment without a unique key. Nothing in the product looks
    events up by `event_id` alone, so no index on it is kept: ingestion pays for the same number
    of indexes as before."""
    if "uq_event_id" not in db[EVENTS].index_information():
        return
    db[EVENTS].create_index([("user_id", ASCENDING), ("event_id", ASCENDING)], unique=True, name="uq_user_event")
    try:
        db[EVENTS].drop_index("uq_event_id")
    except OperationFailure:  # dropped by a process starting alongside
        pass


def rename_fitted_models(db: Database[Any]) -> None:
    """The fitted models' collection was `models`: an installation keeps its fits (and with them
    its profiles' scores) under the new name. A rename where the server allows it; else (a
    server without `renameCollection`, or `fitted_models` begun by an interrupted copy) the
    documents are copied, those already there kept, and `models` dropped after the last page."""
    if LEGACY_FITTED_MODELS not in db.list_collection_names():
        return
    if FITTED_MODELS not in db.list_collection_names():
        try:
            db[LEGACY_FITTED_MODELS].rename(FITTED_MODELS)
            return
        except OperationFailure:
            pass  # refused (unsupported, or the target made by a process starting alongside)
    left = copy_collection(db, LEGACY_FITTED_MODELS, FITTED_MODELS)
    if left:
        # A fit that is not in `fitted_models` under its own `_id` met another fit's version: an
        # analytics worker of the old code, still running in a rolling upgrade, fitted into the
        # emptied `models`. It is kept there, and said, rather than dropped unseen; the next refit
        # supersedes it either way (fits are derived from the summaries).
        log.warning("legacy_fits_kept", collection=LEGACY_FITTED_MODELS, fits=left,
                    reason="their version is taken in fitted_models: fitted by the old code after the rename")
        return
    db.drop_collection(LEGACY_FITTED_MODELS)


def copy_collection(db: Database[Any], source: str, target: str) -> int:
    """Every document of `source` into `target`, by `_id` pages, keeping those already there.
    Returns how many documents of `source` are not in `target` under their `_id` afterwards
    (refused by another unique index of `target`)."""
    last = None
    left = 0
    while True:
        query: dict[str, Any] = {} if last is None else {"_id": {"$gt": last}}
        page = list(db[source].find(query).sort("_id", ASCENDING).limit(_PAGE))
        if not page:
            return left
        _ignoring_duplicates(db[target], page)
        ids = [doc["_id"] for doc in page]
        left += len(ids) - db[target].count_documents({"_id": {"$in": ids}})
        last = ids[-1]


# In the order the versions came.
UPGRADES = (
    Upgrade(since="0002_activity_days", run=key_profiles_by_user),
    Upgrade(since="0007_outbox_traceparent", run=key_events_by_user_and_id),
    Upgrade(since="0010_i21_api_jobs", run=rename_fitted_models),
)


def upgrade(db: Database[Any]) -> None:
    for step in UPGRADES:
        step.run(db)
