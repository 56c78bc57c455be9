"""Validation and mapping: the request schemas and how their errors are named."""
import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from services.api.problems import error_field, field_path
from shared.contracts import event_identity
from shared.contracts.schemas import Event, EventBatch, EventMessage, SignupRequest, StoreEventsMessage

EVENT = TypeAdapter(Event)


def signup(**overrides):
    body = {
        "username": "ivan_data",
        "email": "Ivan.Data@Example.com",
        "full_name": "  Ivan   Ivanov ",
        "address": {"street": "Khreschatyk Street", "city": " Kyiv ", "country_code": "UA"},
    }
    body.update(overrides)
    return body


def error_fields(exc: ValidationError) -> set[str]:
    return {error_field(e) for e in exc.errors()}


def test_signup_normalises_email_names_and_country():
    request = SignupRequest.model_validate(signup())
    assert request.email == "ivan.data@example.com"
    assert request.full_name == "Ivan Ivanov"
    assert request.address.city == "Kyiv"
    assert request.address.country_code == "UA"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"email": "ivan@"}, "email"),
        ({"email": 42}, "email"),
        ({"username": "iv"}, "username"),
        ({"username": "ivan data"}, "username"),
        ({"full_name": "   "}, "full_name"),
        ({"address": {"street": "x", "city": "Kyiv", "country_code": "UKR"}}, "address.country_code"),
        # The document lists upper-case codes; a lower-case one is refused rather than guessed at.
        ({"address": {"street": "x", "city": "Kyiv", "country_code": "ua"}}, "address.country_code"),
        ({"address": {"street": "x", "city": "Kyiv", "country_code": "ZZ"}}, "address.country_code"),
        ({"address": {"street": "x", "country_code": "UA"}}, "address.city"),
        ({"nickname": "x"}, "nickname"),
    ],
)
def test_signup_errors_name_the_field(overrides, field):
    with pytest.raises(ValidationError) as exc:
        SignupRequest.model_validate(signup(**overrides))
    assert field in error_fields(exc.value)


def purchase(**metadata):
    return {"user_id": 1, "event_type": "user_purchase",
            "metadata": {"product_id": "P1", "price": 9.5, "category": "books", **metadata}}


@pytest.mark.parametrize(
    "event, field",
    [
        (purchase(price=-1), "metadata.price"),
        (purchase(price=float("nan")), "metadata.price"),
        ({"user_id": 1, "event_type": "user_purchase", "metadata": {"product_id": "P", "price": 1}},
         "metadata.category"),
        ({**purchase(), "user_id": "abc"}, "user_id"),
        ({**purchase(), "event_type": "Teleport"}, "event_type"),  # not a custom type's name either
        ({**purchase(), "timestamp": "yesterday"}, "timestamp"),
        ({**purchase(), "geo": {"coordinates": [91, 0]}}, "geo.coordinates[0]"),
        # Bounded: what a float or an int can hold is not what a shop sells or MongoDB stores.
        (purchase(price=1e192), "metadata.price"),
        (purchase(quantity=10**7), "metadata.quantity"),
        ({**purchase(), "timestamp": "1969-12-31T23:59:59Z"}, "timestamp"),
        ({"user_id": 1, "event_type": "page_view", "metadata": {"n": 2**63}}, "metadata.n"),
        ({"user_id": 1, "event_type": "page_view", "metadata": {f"k{i}": i for i in range(51)}}, "metadata"),
        ({**purchase(), "metadata": {"product_id": "P\x00", "price": 1, "category": "c"}}, "metadata.product_id"),
        ({**purchase(), "metadata": {"product_id": "P", "price": 1, "category": "   "}}, "metadata.category"),
    ],
)
def test_bad_events_name_the_field(event, field):
    with pytest.raises(ValidationError) as exc:
        EVENT.validate_python(event)
    assert field in error_fields(exc.value), error_fields(exc.value)


def test_batch_errors_carry_the_index():
    with pytest.raises(ValidationError) as exc:
        EventBatch.model_validate({"events": [purchase(), purchase(price=-5)]})
    assert error_fields(exc.value) == {"events[1].metadata.price"}


def test_timestamps_become_utc_and_the_future_is_the_apis_check():
    event = EVENT.validate_python({**purchase(), "timestamp": "2024-01-15T12:30:00+02:00"})
    assert event.timestamp == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    naive = EVENT.validate_python({**purchase(), "timestamp": "2024-01-15T10:30:00"})
    assert naive.timestamp.tzinfo is UTC
    # A stated instant days ahead is a client clock the batch's sent_at may correct: the API refuses
    # what is still more than a day ahead AFTER the correction (services.api.events._correct_clock).
    ahead = EVENT.validate_python({**purchase(), "timestamp": (datetime.now(UTC) + timedelta(days=3)).isoformat()})
    assert ahead.timestamp > datetime.now(UTC)
    with pytest.raises(ValidationError):
        EVENT.validate_python({**purchase(), "timestamp": "1969-12-31T23:59:59+00:00"})


def test_event_document_maps_the_guide_fields():
    event = EVENT.validate_python({**purchase(),
                                   "geo": {"country": "Ukraine", "city": "Kyiv", "coordinates": [50.45, 30.52]}})
    received = datetime(2024, 1, 15, tzinfo=UTC)
    message = EventMessage.of(event, "e-1", received).model_dump(mode="json")
    assert message == {
        "event_id": "e-1",
        "user_id": 1,
        "event_type": "user_purchase",
        "timestamp": received.isoformat(),
        "metadata": {"product_id": "P1", "price": 9.5, "category": "books"},
        "geo": {"country": "Ukraine", "city": "Kyiv", "coordinates": [50.45, 30.52]},
        "received_at": received.isoformat(),
    }
    # The backfill's date for undated events is no time of receipt: the worker stamps its own.
    assert EventMessage.of(event, "e-1", received, received=False).received_at is None


@pytest.mark.parametrize("body", [
    {},
    {"geo": {"country": "Ukraine", "city": "Kyiv", "coordinates": [50.45, 30.52]}},
    {"geo": {"city": "Kyiv"}},
    {"timestamp": "2024-01-15T10:30:00.123456+02:00"},
    {"timestamp": "1970-01-01T00:00:00Z"},
    {"metadata": {"product_id": "P1", "price": 0, "category": "books", "quantity": 3}},
])
def test_the_message_the_api_publishes_is_the_models_json(body):
    """`EventMessage.wire` is the API's shortcut past the model: the same dict as the model's JSON
    dump, which the worker validates back into the same message."""
    event = EVENT.validate_python({**purchase(), **body})
    received = datetime(2024, 1, 15, 12, tzinfo=UTC)
    # Through the broker's JSON serializer, as the worker receives it (a tuple arrives as a list).
    wire = json.loads(json.dumps(EventMessage.wire(event, "e-1", received)))
    assert wire == EventMessage.of(event, "e-1", received).model_dump(mode="json")
    [back] = StoreEventsMessage.model_validate({"events": [wire]}).events
    assert back.document(received)["timestamp"] == (event.timestamp or received)
    assert back == EventMessage.model_validate(EventMessage.of(event, "e-1", received).model_dump(mode="json"))


def test_a_store_events_message_round_trips_to_the_stored_document():
    """What the API publishes, read back by the worker, gives the document MongoDB stores: the
    instant as a UTC datetime, the API's time of receipt kept (the worker's own time for a message
    without one: those queued before it existed), no `geo` when there is none."""
    received = datetime(2024, 1, 15, tzinfo=UTC)
    events = [EventMessage.of(EVENT.validate_python(purchase()), "e-1", received, received=False),
              EventMessage.of(EVENT.validate_python({**purchase(), "geo": {"city": "Kyiv"}}), "e-2", received)]
    wire = StoreEventsMessage(events=events).model_dump(mode="json")
    assert list(wire) == ["events"]  # the keys of the messages queued before the model existed
    assert wire["events"][1]["received_at"] == "2024-01-15T00:00:00+00:00"
    old_message = {k: v for k, v in wire["events"][0].items() if k != "received_at"}
    wire["events"][0] = old_message  # as queued before `received_at` existed: still valid
    stored_at = datetime(2024, 1, 16, tzinfo=UTC)
    docs = [e.document(stored_at) for e in StoreEventsMessage.model_validate(wire).events]
    assert docs == [
        {"event_id": "e-1", "user_id": 1, "event_type": "user_purchase", "timestamp": received,
         "metadata": {"product_id": "P1", "price": 9.5, "category": "books"}, "received_at": stored_at},
        {"event_id": "e-2", "user_id": 1, "event_type": "user_purchase", "timestamp": received,
         "metadata": {"product_id": "P1", "price": 9.5, "category": "books"}, "received_at": received,
         "geo": {"city": "Kyiv"}},
    ]
    assert docs[0]["timestamp"].tzinfo is UTC
    # The time of receipt is not what the client said: two deliveries of one event received at
    # different times are the same event (shared.contracts.event_identity).
    later = {**wire["events"][1], "received_at": "2024-01-15T00:00:09+00:00"}
    assert event_identity.content(later) == event_identity.content(wire["events"][1])


@pytest.mark.parametrize("message", [
    {},
    {"events": [{"event_id": "e", "user_id": 1, "event_type": "login", "timestamp": 1700000000}]},
    {"events": [{"user_id": 1, "event_type": "login", "timestamp": "2024-01-15T00:00:00+00:00"}]},
    {"events": [], "batch": "unknown key"},
])
def test_a_store_events_message_not_of_the_contract_is_refused(message):
    with pytest.raises(ValidationError):
        StoreEventsMessage.model_validate(message)


def test_field_path_formats_locations():
    assert field_path(("events", 3, "(user_purchase)", "metadata", "price")) == "events[3].metadata.price"
    assert field_path(()) == "body"
