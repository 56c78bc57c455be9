"""Request and message schemas: one pydantic model per contract.

The API validates with these models, the OpenAPI spec is generated from them, and the worker
re-validates the messages it consumes with them, so there is no second description to drift.
"""
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    RootModel,
    StringConstraints,
    field_validator,
)

def _printable(value: str) -> str:
    # Postgres text cannot hold NUL, and no name or label has a use for control characters.
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_printable)]
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


def _collapse_spaces(value: str) -> str:
    return " ".join(value.split())


class StrictModel(BaseModel):
    # Unknown fields are an error named in the 422, not silently dropped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --------------------------------------------------------------------------- signup


class AddressIn(StrictModel):
    street: Annotated[NonBlank, StringConstraints(max_length=200), AfterValidator(_collapse_spaces)]
    city: Annotated[NonBlank, StringConstraints(max_length=100), AfterValidator(_collapse_spaces)]
    country_code: Annotated[
        str,
        StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{2}$"),
    ] = Field(description="ISO 3166-1 alpha-2 code, e.g. UA", examples=["UA"])


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
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Label = Annotated[NonBlank, StringConstraints(max_length=100)]
MAX_CLOCK_SKEW = timedelta(days=1)


class Geo(StrictModel):
    country: Label | None = None
    city: Label | None = None
    coordinates: tuple[
        Annotated[float, Field(ge=-90, le=90)], Annotated[float, Field(ge=-180, le=180)]
    ] | None = Field(None, description="[latitude, longitude]")


class PurchaseMetadata(StrictModel):
    product_id: Label
    price: Price = Field(description="What the purchase cost in total (all items)")
    category: Label
    quantity: int | None = Field(None, ge=1, le=1_000_000, description="Items bought, when known")


class ProductMetadata(BaseModel):
    product_id: Label | None = None
    category: Label | None = None
    price: Price | None = None


class _EventBase(StrictModel):
    event_id: EventId | None = Field(
        None, description="Idempotency key; generated when absent. Re-sending an id never duplicates."
    )
    user_id: int = Field(gt=0, lt=2**31)
    timestamp: datetime | None = Field(
        None, description="ISO 8601; without an offset it is read as UTC; default: time of receipt"
    )
    geo: Geo | None = None

    @field_validator("timestamp")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("timestamp is more than a day in the future")
        return value


class PurchaseEvent(_EventBase):
    event_type: Literal["user_purchase"]
    metadata: PurchaseMetadata


class CartEvent(_EventBase):
    event_type: Literal["add_to_cart"]
    metadata: ProductMetadata = Field(default_factory=ProductMetadata)


class ActivityEvent(_EventBase):
    event_type: Literal["page_view", "login", "logout", "search"]
    metadata: dict[MetadataKey, Annotated[str, StringConstraints(max_length=1000)] | int | float | bool | None] = Field(
        default_factory=dict
    )


EVENT_TYPES = ("user_purchase", "add_to_cart", "page_view", "login", "logout", "search")

Event = Annotated[Union[PurchaseEvent, CartEvent, ActivityEvent], Field(discriminator="event_type")]


class EventBatch(StrictModel):
    events: list[Event] = Field(min_length=1)


class SingleEvent(RootModel[Event]):
    """One event as the body of POST /api/events (the same union as in a batch)."""


def event_document(event: PurchaseEvent | CartEvent | ActivityEvent, event_id: str, received_at: datetime) -> dict[str, Any]:
    """The JSON-safe message form of a validated event (the worker turns it into a document)."""
    return {
        "event_id": event_id,
        "user_id": event.user_id,
        "event_type": event.event_type,
        "timestamp": (event.timestamp or received_at).isoformat(),
        "metadata": event.metadata.model_dump(exclude_none=True)
        if isinstance(event.metadata, BaseModel)
        else dict(event.metadata),
        "geo": event.geo.model_dump(exclude_none=True) if event.geo else None,
    }


# --------------------------------------------------------------------------- problems


class FieldProblem(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. address.country_code")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldProblem] | None = None
