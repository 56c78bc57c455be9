"""Request and message schemas: one pydantic model per contract.

The API validates with these models, the OpenAPI spec is generated from them, and the worker
re-validates the messages it consumes with them, so there is no second description to drift.
"""
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import email_validator
import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    RootModel,
    SerializerFunctionWrapHandler,
    StringConstraints,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_serializer,
)


def _printable(value: str) -> str:
    # Postgres text cannot hold NUL, and no name or label has a use for control characters.
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


# The pattern says in the OpenAPI document what _printable and the stripping enforce: no control
# characters, something other than white space.
NonBlank = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1,
                      pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"),
    AfterValidator(_printable),
]
# A visitor's id as its tracker chose it (a cookie, a device id): printable, at most 200 characters.
AnonymousId = Annotated[NonBlank, StringConstraints(max_length=200)]
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


def _collapse_spaces(value: str) -> str:
    return " ".join(value.split())


def iso_text(value: object, field: str) -> object:
    """The document says an ISO 8601 string: a number is not read as seconds since 1970."""
    if value is not None and not isinstance(value, str | date | datetime):
        raise ValueError(f"{field} must be an ISO 8601 string")
    return value


class StrictModel(BaseModel):
    # Unknown fields are an error named in the 422, not silently dropped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --------------------------------------------------------------------------- signup


# Every code the countries table holds (migration 0001 fills it from pycountry), as an enum in the
# OpenAPI document too: a code the document calls valid is one the API accepts.
COUNTRY_CODES = tuple(sorted(country.alpha_2 for country in pycountry.countries))
_KNOWN_COUNTRY_CODES = frozenset(COUNTRY_CODES)


def _known_country(code: str) -> str:
    if code not in _KNOWN_COUNTRY_CODES:
        raise ValueError("not an ISO 3166-1 alpha-2 country code (upper case)")
    return code


CountryCode = Annotated[str, AfterValidator(_known_country),
                        WithJsonSchema({"type": "string", "enum": list(COUNTRY_CODES)})]


class AddressIn(StrictModel):
    street: Annotated[NonBlank, StringConstraints(max_length=200), AfterValidator(_collapse_spaces)]
    city: Annotated[NonBlank, StringConstraints(max_length=100), AfterValidator(_collapse_spaces)]
    country_code: CountryCode = Field(description="ISO 3166-1 alpha-2 code, upper case, e.g. UA", examples=["UA"])


# An address the e-mail grammar accepts is accepted, special-use domains (`.test`, `.local`, ...)
# included, as the OpenAPI document's `format: email` says: whether it can receive mail is the
# mail server's call, and a refused welcome is dead-lettered where it can be seen and replayed
# (shared.infra.dead_letters).
email_validator.SPECIAL_USE_DOMAIN_NAMES.clear()


class SignupRequest(StrictModel):
    username: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{3,32}$")] = Field(
        description="3–32 letters, digits, '_', '.', '-'; unique regardless of case",
        examples=["ivan_data"],
    )
    email: EmailStr = Field(examples=["ivan.data@example.com"])
    full_name: Annotated[NonBlank, StringConstraints(max_length=200), AfterValidator(_collapse_spaces)] = Field(
        examples=["Ivan Ivanov"]
    )
    address: AddressIn
    anonymous_id: AnonymousId | None = Field(
        None, description="The visitor who signed up (issue 23): linked to the new user in the signup's "
        "transaction, so the visits before the signup become the user's. 409 when it belongs to another user.")

    @field_validator("email")
    @classmethod
    def _normalise_email(cls, value: str) -> str:
        # One mailbox, one account: the whole address is compared in lower case.
        return value.lower()


class UserCreatedMessage(BaseModel):
    """Body of the `user.created` message the outbox relay publishes."""

    event_id: str
    user_id: int
    username: str
    email: str
    full_name: str
    city: str
    country_code: str
    created_at: datetime


# --------------------------------------------------------------------------- events

EventId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
# Bounds a real shop never reaches but a float can: a price of 1e192 would be stored, summed into
# 200-digit category totals and overflow the models' arithmetic.
MAX_PRICE = 1_000_000
# Numbers are strict: `false` or "12" is not a price (the document says number), so it is refused.
Price = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False, strict=True)]
Label = Annotated[NonBlank, StringConstraints(max_length=100)]
MAX_CLOCK_SKEW = timedelta(days=1)
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MAX_METADATA_KEYS = 50
# MongoDB stores integers in 64 bits; a larger one would fail in the worker, not here.
Int64 = Annotated[int, Field(ge=-(2**63), lt=2**63, strict=True)]
# Bounded too: an integer too large for Int64 would otherwise become an imprecise float.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, ge=-1e15, le=1e15, strict=True)]


class Geo(StrictModel):
    country: Label | None = None
    city: Label | None = None
    coordinates: tuple[
        Annotated[float, Field(ge=-90, le=90, strict=True)], Annotated[float, Field(ge=-180, le=180, strict=True)]
    ] | None = Field(None, description="[latitude, longitude]")


class PurchaseMetadata(StrictModel):
    product_id: Label
    price: Price = Field(description="What the purchase cost in total (all items)")
    category: Label
    quantity: int | None = Field(None, ge=1, le=1_000_000, strict=True, description="Items bought, when known")


class ProductMetadata(StrictModel):
    product_id: Label | None = None
    category: Label | None = None
    price: Price | None = None


def _not_nullable(schema: dict[str, Any]) -> None:
    """The document's form of an optional id: the member that is not `null` (with the field's own
    title, description and default kept)."""
    members = [m for m in schema.pop("anyOf", []) if m.get("type") != "null"]
    if members:
        schema.update(members[0])
    schema.pop("default", None)


class _EventBase(StrictModel):
    # At least one of the two ids: the API's accept path enforces it with a 422 naming `user_id`
    # (services.api.events), as a model-level error would name no field. Not an `anyOf` in the
    # document: inside the event union it left schemathesis unable to generate a batch at all.

    event_id: EventId | None = Field(
        None, description="Idempotency key within the person: an event is `(user_id, event_id)`, or "
        "`(anonymous_id, event_id)` for a visitor not yet identified. Generated when absent. The same person "
        "re-sending an id never duplicates (the first copy wins); another person's event with the same id is a "
        "different event."
    )
    # Optional, not nullable: absent when the event is a visitor's (an explicit null is refused, as
    # the document says; `_not_null`).
    user_id: Annotated[int, Field(gt=0, lt=2**31, strict=True)] | None = Field(
        None, description="The user (signed up). `user_id`, `anonymous_id` or both.",
        json_schema_extra=lambda schema: _not_nullable(schema))
    anonymous_id: AnonymousId | None = Field(
        None, description="A visitor not (yet) signed up, as its tracker names it (1–200 printable characters). "
        "With `user_id` too, the event links the visitor to the user (as POST /api/identify does).",
        json_schema_extra=lambda schema: _not_nullable(schema))
    timestamp: datetime | None = Field(
        None, description="ISO 8601; without an offset it is read as UTC; default: time of receipt. "
        "From 1970-01-01 to a day after receipt (clock skew), after the batch's `sent_at` correction."
    )
    geo: Geo | None = None

    _timestamp_is_text = field_validator("timestamp", mode="before")(lambda value: iso_text(value, "timestamp"))

    @field_validator("user_id", "anonymous_id", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for a value sent (an absent field keeps its default): null is not an id.
        if value is None:
            raise ValueError("must not be null (leave it out instead)")
        return value

    @field_validator("timestamp")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        # The "more than a day in the future" check is the API's (services.api.events), made after
        # the batch's clock correction: a client whose clock runs two days ahead states such instants.
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value < EARLIEST_TIMESTAMP:
            raise ValueError("timestamp is before 1970-01-01")
        return value



class PurchaseEvent(_EventBase):
    event_type: Literal["user_purchase"]
    metadata: PurchaseMetadata


class CartEvent(_EventBase):
    event_type: Literal["add_to_cart"]
    metadata: ProductMetadata = Field(default_factory=ProductMetadata)


class ActivityEvent(_EventBase):
    event_type: Literal["page_view", "login", "logout", "search"]
    metadata: dict[MetadataKey,
                   Annotated[str, StringConstraints(max_length=1000)] | Int64 | FiniteFloat | bool | None] = Field(
        default_factory=dict, max_length=MAX_METADATA_KEYS
    )


EVENT_TYPES = ("user_purchase", "add_to_cart", "page_view", "login", "logout", "search")

Event = Annotated[PurchaseEvent | CartEvent | ActivityEvent, Field(discriminator="event_type")]


class EventBatch(StrictModel):
    events: list[Event] = Field(min_length=1)
    sent_at: datetime | None = Field(
        None, description="ISO 8601: when the client sent the batch, by its own clock. Each event's timestamp is "
        "then corrected by (time of receipt − sent_at), the raw one kept as `original_timestamp`.")

    _sent_at_is_text = field_validator("sent_at", mode="before")(lambda value: iso_text(value, "sent_at"))

    @field_validator("sent_at")
    @classmethod
    def _sent_at_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SingleEvent(RootModel[Event]):
    """One event as the body of POST /api/events (the same union as in a batch)."""


# --------------------------------------------------------------------------- event messages and documents


def event_document(*, event_id: str, user_id: int | None, event_type: str, timestamp: datetime,
                   metadata: dict[str, Any], geo: dict[str, Any] | None, received_at: datetime,
                   anonymous_id: str | None = None, original_timestamp: datetime | None = None) -> dict[str, Any]:
    """An event as MongoDB `events` stores it (services.worker.storage adds `batch_id`): the one
    builder of that shape, for the API's events, the signup's `user_created` and the backfill.
    `user_id` None: a visitor's event, whose person services.worker.storage resolves from
    `anonymous_id` (the user it is linked to, or the negative of the visitor's id)."""
    document: dict[str, Any] = {
        "event_id": event_id,
        "user_id": user_id,
        "event_type": event_type,
        "timestamp": timestamp.astimezone(UTC),
        "metadata": metadata,
    }
    # Before `received_at`: BSON keeps key order, and the documents stored before issue 22 have it so.
    if geo is not None:
        document["geo"] = geo
    document["received_at"] = received_at
    # Only when present: the documents of known users' events keep their shape.
    if anonymous_id is not None:
        document["anonymous_id"] = anonymous_id
    if original_timestamp is not None:
        document["original_timestamp"] = original_timestamp.astimezone(UTC)
    return document


_OPTIONAL_MESSAGE_KEYS = ("anonymous_id", "original_timestamp")


class EventMessage(BaseModel):
    """One event of a store-events message: a validated event as JSON (the instant as ISO text).
    Lenient where the API was strict: it describes what the API already accepted."""

    # A key the contract does not name fails the message for good (dead-lettered, where it is
    # seen): the worker before the typed message stored whatever it was given, and dropping such a
    # key silently would be a loss nobody notices.
    model_config = ConfigDict(extra="forbid")

    event_id: str
    user_id: int | None
    event_type: str
    timestamp: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    geo: dict[str, Any] | None = None
    # Issue 23; each None by default, so that messages queued before still validate.
    anonymous_id: str | None = None
    original_timestamp: datetime | None = None  # the client's own instant, when `sent_at` corrected it

    _timestamp_is_text = field_validator("timestamp", "original_timestamp", mode="before")(
        lambda value: iso_text(value, "timestamp"))

    @field_serializer("timestamp", "original_timestamp", when_used="json")
    def _iso(self, value: datetime | None) -> str | None:
        # The text messages have always carried (`+00:00`, not pydantic's `Z`).
        return value.isoformat() if value is not None else None

    @model_serializer(mode="wrap")
    def _without_absent_visitor_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # As `wire` builds it: the issue-23 keys only when set, so a known user's message keeps the
        # keys every message queued before has (a worker not yet upgraded still takes it).
        dumped: dict[str, Any] = handler(self)
        for name in _OPTIONAL_MESSAGE_KEYS:
            if dumped.get(name) is None:
                dumped.pop(name, None)
        return dumped

    @staticmethod
    def _fields(event: PurchaseEvent | CartEvent | ActivityEvent, event_id: str,
                received_at: datetime) -> dict[str, Any]:
        metadata = event.metadata.model_dump(exclude_none=True) if isinstance(event.metadata, BaseModel) \
            else dict(event.metadata)
        fields = {"event_id": event_id, "user_id": event.user_id, "event_type": event.event_type,
                  "timestamp": event.timestamp or received_at, "metadata": metadata,
                  "geo": event.geo.model_dump(exclude_none=True) if event.geo else None}
        # Only when set: a known user's message keeps the keys every message already queued has.
        if event.anonymous_id is not None:
            fields["anonymous_id"] = event.anonymous_id
        return fields

    @classmethod
    def of(cls, event: PurchaseEvent | CartEvent | ActivityEvent, event_id: str,
           received_at: datetime) -> "EventMessage":
        """A validated event, dated `received_at` when it has no timestamp of its own."""
        # Built, not validated again: the event was, by the stricter request models.
        return cls.model_construct(**cls._fields(event, event_id, received_at))

    @classmethod
    def wire(cls, event: PurchaseEvent | CartEvent | ActivityEvent, event_id: str,
             received_at: datetime) -> dict[str, Any]:
        """`of(...).model_dump(mode="json")` without the model in between: the API builds one for
        every event it accepts, and a model per event, dumped, cost it twice the old dict's time."""
        fields = cls._fields(event, event_id, received_at)
        fields["timestamp"] = fields["timestamp"].isoformat()
        return fields

    def document(self, received_at: datetime) -> dict[str, Any]:
        return event_document(event_id=self.event_id, user_id=self.user_id, event_type=self.event_type,
                              timestamp=self.timestamp, metadata=self.metadata, geo=self.geo,
                              received_at=received_at, anonymous_id=self.anonymous_id,
                              original_timestamp=self.original_timestamp)


class StoreEventsMessage(BaseModel):
    """What the API publishes on the store-events queue: the task's keyword arguments. The batch id
    is the message's Celery task id (the same on every delivery and retry), not a field, so the keys
    are those every message already queued carries. An unknown key fails the task, as it did when
    the task took `events` as its one argument."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventMessage]
