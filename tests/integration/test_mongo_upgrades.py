"""MongoDB data upgrades at start (shared.infra.mongo_upgrades) on the real wire server: the fitted
models' collection renamed from `models` to `fitted_models`, by a rename or, where the server
refuses one, by a copy, without losing or doubling a fit; run twice, the second start finds
nothing to do."""
import uuid

import pytest
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure

from shared.infra.mongo import FITTED_MODELS, prepare_database
from shared.infra.mongo_upgrades import LEGACY_FITTED_MODELS, rename_fitted_models
from tests.conftest import RUN_ID, TEST_ENV

FITS = [{"version": v, "as_of": f"2026-0{v}-01", "bgnbd": {"r": 0.2 + v / 10}} for v in range(1, 6)]


@pytest.fixture
def database(services):
    name = f"pulse_upgrade_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    uri = f"{TEST_ENV['MONGO_URI'].rsplit('/', 1)[0]}/{name}"
    client = MongoClient(uri, tz_aware=True)
    try:
        yield uri, client[name]
    finally:
        client.drop_database(name)
        client.close()


def fits(db) -> list[dict]:
    return sorted(db[FITTED_MODELS].find({}, projection={"_id": 0}), key=lambda doc: doc["version"])


def test_the_fitted_models_of_an_installation_are_renamed_at_start(database):
    uri, db = database
    db[LEGACY_FITTED_MODELS].create_index([("version", -1)], unique=True, name="uq_version")
    db[LEGACY_FITTED_MODELS].insert_many([dict(f) for f in FITS])

    prepare_database(uri)
    prepare_database(uri)  # the next start, or a second process

    names = db.list_collection_names()
    assert LEGACY_FITTED_MODELS not in names and FITTED_MODELS in names
    assert fits(db) == FITS
    assert db[FITTED_MODELS].index_information()["uq_version"]["unique"] is True
    with pytest.raises(DuplicateKeyError):
        db[FITTED_MODELS].insert_one({"version": 5})


def test_where_the_server_refuses_the_rename_the_fits_are_copied_once(database):
    """A start interrupted in the middle of a copy left `fitted_models` with some of the fits:
    the server refuses a rename onto it, so the rest are copied, those already there kept, and
    `models` dropped."""
    uri, db = database
    db[LEGACY_FITTED_MODELS].insert_many([dict(f) for f in FITS])
    db[FITTED_MODELS].insert_many(list(db[LEGACY_FITTED_MODELS].find().sort("version", 1).limit(2)))
    with pytest.raises(OperationFailure):
        db[LEGACY_FITTED_MODELS].rename(FITTED_MODELS)  # the refusal the upgrade falls back from

    rename_fitted_models(db)
    prepare_database(uri)

    assert LEGACY_FITTED_MODELS not in db.list_collection_names()
    assert fits(db) == FITS


def test_an_installation_without_fits_gets_the_new_collection_only(database):
    uri, db = database
    prepare_database(uri)
    assert LEGACY_FITTED_MODELS not in db.list_collection_names()
    assert "uq_version" in db[FITTED_MODELS].index_information()


def test_a_fit_an_old_analytics_worker_made_after_the_rename_is_not_dropped_unseen(database):
    """A rolling upgrade: a new process renamed `models`, an analytics worker of the old version,
    still running, fits again into `models` (it numbers the fit from that collection, now empty:
    version 1). At the next start of a new process the copy meets `uq_version` on a fit that is
    NOT the same document. Dropping `models` then throws that fit away with nothing said: it must
    survive somewhere, in `fitted_models` or in `models` left for an operator."""
    uri, db = database
    db[LEGACY_FITTED_MODELS].insert_many([dict(f) for f in FITS])
    prepare_database(uri)  # the first new process: renamed
    assert fits(db) == FITS
    late_fit = {"version": 1, "as_of": "2026-07-01", "bgnbd": {"r": 0.9}}
    db[LEGACY_FITTED_MODELS].insert_one(dict(late_fit))  # the old worker's next fit

    prepare_database(uri)  # the next new process

    kept = [{k: v for k, v in doc.items() if k != "_id"}
            for name in (FITTED_MODELS, LEGACY_FITTED_MODELS) for doc in db[name].find()]
    assert late_fit in kept
