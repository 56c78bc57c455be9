"""The stored event document is the same, byte for byte, as before issue 22 (a restructuring that
promised no change): what a message queued by the API of before becomes in the worker of now, and
what the worker of before made of the same message.

BSON keeps the order of a document's keys, so "the same document" includes the order: a document
dumped, compared by hash, or returned as stored (the personal-data export) must not differ from
the ones stored before the upgrade in the same collection.
"""
import json
from datetime import UTC, datetime

import bson
import pytest

from shared.contracts.schemas import StoreEventsMessage, event_document

RECEIVED = datetime(2026, 12, 7, 1, 0, 0, 123456, tzinfo=UTC)

# Messages as the API of a9bab01 published them (shared/schemas.py event_document: the instant as
# isoformat() text of a UTC datetime, geo None when absent), through Celery's JSON.
OLD_MESSAGES = [
    {"event_id": "a1", "user_id": 5, "event_type": "user_purchase",
     "timestamp": "2024-03-01T04:30:00.123456+00:00",
     "metadata": {"product_id": "p", "price": 12.5, "category": "c"},
     "geo": {"country": "DE", "city": "Berlin", "coordinates": [52.5, 13.4]}},
    {"event_id": "a2", "user_id": 5, "event_type": "page_view", "timestamp": "2024-03-01T10:00:00+00:00",
     "metadata": {"page": "/x", "n": 3, "f": 1.0, "b": True, "z": None}, "geo": None},
    {"event_id": "a3", "user_id": 5, "event_type": "login", "timestamp": "1970-01-01T00:00:00+00:00",
     "metadata": {}, "geo": {}},
    {"event_id": "a4", "user_id": 5, "event_type": "search", "timestamp": "2026-12-07T23:59:59.999999+00:00",
     "metadata": {"q": "x", "big": 9223372036854775807}, "geo": {"city": "Kyiv"}},
]


def old_worker_document(event: dict, received_at: datetime) -> dict:
    """services/worker/tasks.py event_documents at a9bab01, for one event."""
    doc = dict(event)
    doc["timestamp"] = datetime.fromisoformat(event["timestamp"]).astimezone(UTC)
    doc["received_at"] = received_at
    if doc.get("geo") is None:
        doc.pop("geo", None)
    return doc


@pytest.mark.parametrize("event", OLD_MESSAGES, ids=[e["event_id"] for e in OLD_MESSAGES])
def test_a_message_queued_before_the_upgrade_is_stored_as_the_old_worker_stored_it(event):
    wire = json.loads(json.dumps({"events": [event]}))
    [message] = StoreEventsMessage.model_validate(wire).events
    new = message.document(RECEIVED)
    old = old_worker_document(event, RECEIVED)
    assert new == old
    assert list(new) == list(old)
    assert bson.encode(new) == bson.encode(old)


def test_the_signup_event_keeps_the_shape_the_worker_stored_before():
    """services/worker/tasks.py user_created at a9bab01 built the document by hand, `geo` before
    `received_at`."""
    created = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    old = {"event_id": "signup-1", "user_id": 7, "event_type": "user_created", "timestamp": created,
           "metadata": {"username": "ivan"}, "geo": {"city": "Kyiv", "country": "UA"}, "received_at": RECEIVED}
    new = event_document(event_id="signup-1", user_id=7, event_type="user_created", timestamp=created,
                         metadata={"username": "ivan"}, geo={"city": "Kyiv", "country": "UA"},
                         received_at=RECEIVED)
    assert bson.encode(new) == bson.encode(old)


def test_a_key_of_an_event_the_contract_does_not_name_is_not_dropped_unseen():
    """The worker of before stored every key of a queued event (`dict(event)`). The message's
    top level refuses an unknown key (the task fails for good, dead-lettered where it is seen);
    an unknown key of one event must not instead vanish from the stored document with nothing
    said: stored as before, or refused like the top level."""
    event = {**OLD_MESSAGES[1], "source": "importer-v1"}
    try:
        [message] = StoreEventsMessage.model_validate({"events": [event]}).events
    except ValueError:
        return  # refused: the message is dead-lettered with its error
    assert message.document(RECEIVED) == old_worker_document(event, RECEIVED)
