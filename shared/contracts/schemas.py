"""Request and message schemas: one pydantic model per contract.

The API validates with these models, the OpenAPI spec is generated from them, and the worker
re-validates the messages it consumes with them, so there is no second description to drift.
"""
import json
import math
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import email_validator
import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    EmailStr,
    Field,
    RootModel,
    SerializerFunctionWrapHandler,
    StringConstraints,
    Tag,
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
# Free text that may be empty (a filter, a label): no control characters, so Postgres never sees a NUL.
Printable = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$"), AfterValidator(_printable)]
# A visitor's id as its tracker chose it (a cookie, a device id): printable, at most 200 characters.
AnonymousId = Annotated[NonBlank, StringConstraints(max_length=200)]
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


def _collapse_spaces(value: str) -> str:
    return " ".join(value.split())


def in_utc(value: datetime) -> datetime:
    """The instant in UTC (read as UTC without an offset). A ValueError, so a 422 naming the field,
    when UTC leaves the calendar: "0001-01-01T00:00:00+01:00" is in year 0, "9999-12-31T23:59:59-01:00"
    in year 10000 (astimezone's OverflowError was a 500)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the years 1 to 9999 in UTC") from None


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
        value = in_utc(value)
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

# ------------------------------------------------------------------- custom events (the tracking plan)

CUSTOM_EVENT_TYPE = r"^[a-z][a-z0-9_]{0,63}$"
# Bounds of a custom event's metadata (what MongoDB can store and a document should hold): the
# tracking plan's schema says what the keys mean, these say what any metadata may be.
CUSTOM_METADATA_DEPTH = 5  # the metadata object is level 1; each object or array inside it one more
CUSTOM_METADATA_BYTES = 32 * 1024  # serialized as compact JSON, UTF-8
CUSTOM_KEY_PATTERN = r"^[^$.\x00][^.\x00]{0,63}$"
_INT64 = (-(2**63), 2**63)


def _custom_value_problem(value: Any, path: str, depth: int) -> str | None:
    """What is wrong with a custom metadata value, naming where (None: nothing)."""
    if isinstance(value, dict):
        if depth > CUSTOM_METADATA_DEPTH:
            return f"{path}: nested deeper than {CUSTOM_METADATA_DEPTH} levels"
        for name, item in value.items():
            # MongoDB reads a key starting with `$` as an operator and a `.` as a path; NUL ends a C string.
            if not isinstance(name, str) or not 1 <= len(name) <= 64 or name[0] == "$" or "." in name \
                    or "\x00" in name or (problem := _custom_value_problem(name, path, depth)) is not None:
                return f"{path}: key {name!r} must be 1-64 characters of valid Unicode, not start with '$', " \
                    "hold no '.' or NUL"
            if (problem := _custom_value_problem(item, f"{path}.{name}", depth + 1)) is not None:
                return problem
    elif isinstance(value, list):
        if depth > CUSTOM_METADATA_DEPTH:
            return f"{path}: nested deeper than {CUSTOM_METADATA_DEPTH} levels"
        for index, item in enumerate(value):
            if (problem := _custom_value_problem(item, f"{path}[{index}]", depth + 1)) is not None:
                return problem
    elif isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{path}: text must be valid Unicode (no lone surrogates)"
    elif isinstance(value, bool) or value is None:
        return None
    elif isinstance(value, int):
        if not _INT64[0] <= value < _INT64[1]:
            return f"{path}: integer outside the 64-bit range MongoDB stores"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"{path}: number must be finite"
    else:
        return f"{path}: not a JSON value"
    return None


def _custom_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} keys")
    if (problem := _custom_value_problem(value, "metadata", 1)) is not None:
        raise ValueError(problem)
    if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) > CUSTOM_METADATA_BYTES:
        raise ValueError(f"at most {CUSTOM_METADATA_BYTES} bytes as JSON")
    return value


CustomMetadata = Annotated[
    dict[str, Any], AfterValidator(_custom_metadata),
    # What a schema can say of the bounds above (depth and size it cannot: those answer a 422 naming `metadata`).
    WithJsonSchema({"type": "object", "maxProperties": MAX_METADATA_KEYS, "additionalProperties": True,
                    "propertyNames": {"pattern": CUSTOM_KEY_PATTERN, "minLength": 1, "maxLength": 64},
                    "description": "Any JSON object (nested up to 5 levels, at most 32 KiB as JSON); "
                    "the tracking plan's schema for the event type, if any, says what it must hold"}),
]
# Any name of the pattern but the built-ins': in the document too, so that exactly one member of
# the union matches an event (its oneOf holds).
CustomEventType = Annotated[
    str, StringConstraints(pattern=CUSTOM_EVENT_TYPE),
    WithJsonSchema({"type": "string", "pattern": CUSTOM_EVENT_TYPE, "not": {"enum": list(EVENT_TYPES)}}),
]


class CustomEvent(_EventBase):
    """An event type the client defines; the tracking plan (services.api.tracking_plan) decides
    whether its metadata is accepted, flagged or refused."""

    event_type: CustomEventType = Field(description="Any name matching ^[a-z][a-z0-9_]{0,63}$ other than the "
                                        "built-in types")
    metadata: CustomMetadata = Field(default_factory=dict)


# pydantic's location of an error inside an event carries its member's tag (services.api.problems
# leaves it out of the field's name): in parentheses, which no field's name can hold.
CUSTOM_EVENT_TAG = "(custom)"
_BUILT_IN_TAGS = {"user_purchase": "(user_purchase)", "add_to_cart": "(add_to_cart)", "page_view": "(activity)",
                  "login": "(activity)", "logout": "(activity)", "search": "(activity)"}
UNION_TAGS = frozenset({CUSTOM_EVENT_TAG, *_BUILT_IN_TAGS.values()})


def _event_tag(value: Any) -> str | None:
    """The union member an event is validated by: its built-in type's model, or the custom model
    for any other name (which then checks the name's pattern, naming `event_type` if it fails)."""
    event_type = value.get("event_type") if isinstance(value, dict) else getattr(value, "event_type", None)
    if not isinstance(event_type, str):
        return None  # pydantic answers union_tag_not_found: services.api.problems names `event_type`
    return _BUILT_IN_TAGS.get(event_type, CUSTOM_EVENT_TAG)


AnyEvent = PurchaseEvent | CartEvent | ActivityEvent | CustomEvent
Event = Annotated[
    Annotated[PurchaseEvent, Tag("(user_purchase)")] | Annotated[CartEvent, Tag("(add_to_cart)")]
    | Annotated[ActivityEvent, Tag("(activity)")] | Annotated[CustomEvent, Tag(CUSTOM_EVENT_TAG)],
    Discriminator(_event_tag),
]


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
        return in_utc(value)


class SingleEvent(RootModel[Event]):
    """One event as the body of POST /api/events (the same union as in a batch)."""


# --------------------------------------------------------------------------- event messages and documents


def event_document(*, event_id: str, user_id: int | None, event_type: str, timestamp: datetime,
                   metadata: dict[str, Any], geo: dict[str, Any] | None, received_at: datetime,
                   anonymous_id: str | None = None, original_timestamp: datetime | None = None,
                   violations: list[str] | None = None) -> dict[str, Any]:
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
    if violations:  # a flagged custom event: what it broke of the tracking plan (services.api.tracking_plan)
        document["violations"] = violations
    return document


_OPTIONAL_MESSAGE_KEYS = ("anonymous_id", "original_timestamp", "violations")


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
    # When the API received the event (not what the client said: no part of its content,
    # shared.contracts.event_identity). None in the messages queued before it existed, and in the
    # backfill's: the worker then stores its own time of receipt. Ingestion lag is measured from it.
    received_at: datetime | None = None
    # Issue 23; each None by default, so that messages queued before still validate.
    anonymous_id: str | None = None
    original_timestamp: datetime | None = None  # the client's own instant, when `sent_at` corrected it
    # What a custom event broke of the tracking plan, when its entry says `flag` (or an unplanned
    # type, with TRACKING_PLAN_UNPLANNED=flag): stored on the document. Not part of the event's
    # content (shared.contracts.event_identity.content): it is the plan's verdict at receipt.
    violations: list[str] | None = None

    _timestamp_is_text = field_validator("timestamp", "received_at", "original_timestamp", mode="before")(
        lambda value, info: iso_text(value, info.field_name))

    @field_serializer("timestamp", "received_at", "original_timestamp", when_used="json")
    def _iso(self, value: datetime | None) -> str | None:
        # The text messages have always carried (`+00:00`, not pydantic's `Z`).
        return value.isoformat() if value is not None else None

    @model_serializer(mode="wrap")
    def _without_absent_optional_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # As `wire` builds it: the issue-23 keys only when set, so a known user's message keeps the
        # keys every message queued before has (a worker not yet upgraded still takes it).
        dumped: dict[str, Any] = handler(self)
        for name in _OPTIONAL_MESSAGE_KEYS:
            if dumped.get(name) is None:
                dumped.pop(name, None)
        return dumped

    @staticmethod
    def _fields(event: AnyEvent, event_id: str,
                received_at: datetime, received: bool) -> dict[str, Any]:
        metadata = event.metadata.model_dump(exclude_none=True) if isinstance(event.metadata, BaseModel) \
            else dict(event.metadata)
        fields = {"event_id": event_id, "user_id": event.user_id, "event_type": event.event_type,
                  "timestamp": event.timestamp or received_at, "metadata": metadata,
                  "geo": event.geo.model_dump(exclude_none=True) if event.geo else None,
                  "received_at": received_at if received else None}
        # Only when set: a known user's message keeps the keys every message already queued has.
        if event.anonymous_id is not None:
            fields["anonymous_id"] = event.anonymous_id
        return fields

    @classmethod
    def of(cls, event: AnyEvent, event_id: str,
           received_at: datetime, *, received: bool = True) -> "EventMessage":
        """A validated event, dated `received_at` when it has no timestamp of its own. `received`:
        the API received it at `received_at` (kept as the message's `received_at`); the backfill
        passes False, its `received_at` only dating the undated events."""
        # Built, not validated again: the event was, by the stricter request models.
        return cls.model_construct(**cls._fields(event, event_id, received_at, received))

    @classmethod
    def wire(cls, event: AnyEvent, event_id: str,
             received_at: datetime) -> dict[str, Any]:
        """`of(...).model_dump(mode="json")` without the model in between: the API builds one for
        every event it accepts, and a model per event, dumped, cost it twice the old dict's time."""
        fields = cls._fields(event, event_id, received_at, True)
        fields["timestamp"] = fields["timestamp"].isoformat()
        fields["received_at"] = received_at.isoformat()
        return fields

    def document(self, received_at: datetime) -> dict[str, Any]:
        """The stored document; `received_at` (the worker's time) when the message has none."""
        return event_document(event_id=self.event_id, user_id=self.user_id, event_type=self.event_type,
                              timestamp=self.timestamp, metadata=self.metadata, geo=self.geo,
                              received_at=self.received_at or received_at, anonymous_id=self.anonymous_id,
                              original_timestamp=self.original_timestamp, violations=self.violations)


class StoreEventsMessage(BaseModel):
    """What the API publishes on the store-events queue: the task's keyword arguments. The batch id
    is the message's Celery task id (the same on every delivery and retry), not a field, so the keys
    are those every message already queued carries. An unknown key fails the task, as it did when
    the task took `events` as its one argument."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventMessage]
