"""Postgres schema: User → Address → City → Country, per-user activity counters and purchase
summaries (derived from MongoDB `events`, maintained by the worker), and the transactional outbox.

Alembic migrations in `shared/contracts/migrations` create exactly these tables; a test compares the two.
"""
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Country(Base):
    __tablename__ = "countries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(2), unique=True)  # ISO 3166-1 alpha-2
    name: Mapped[str] = mapped_column(String(100))
    population: Mapped[int | None] = mapped_column(BigInteger)
    gdp_per_capita: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))

    cities: Mapped[list["City"]] = relationship(back_populates="country")


class City(Base):
    __tablename__ = "cities"
    __table_args__ = (UniqueConstraint("name", "country_id", name="uq_cities_name_country"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    country_id: Mapped[int] = mapped_column(ForeignKey("countries.id"), index=True)

    country: Mapped[Country] = relationship(back_populates="cities")
    addresses: Mapped[list["Address"]] = relationship(back_populates="city")


class Address(Base):
    __tablename__ = "addresses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    street: Mapped[str] = mapped_column(String(200))
    city_id: Mapped[int] = mapped_column(ForeignKey("cities.id"), index=True)

    city: Mapped[City] = relationship(back_populates="addresses")
    users: Mapped[list["User"]] = relationship(back_populates="address")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # Usernames are unique regardless of case: "Ivan" and "ivan" are one person to a human.
        Index("uq_users_username_lower", func.lower(text("username")), unique=True),
        Index("ix_users_profile_score", "profile_score"),
        # Retention by signup cohort reads the users who signed up in a range of periods.
        Index("ix_users_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(32))
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored normalised (lower case)
    full_name: Mapped[str] = mapped_column(String(200))
    profile_score: Mapped[float] = mapped_column(Float, server_default=text("0"), default=0.0)
    # Written with profile_score by analytics; NULL until the first profile.
    segment: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    address_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"), index=True)

    address: Mapped[Address] = relationship(back_populates="users")


class ActivityDay(Base):
    """How many events a user had on one UTC day, and the latest of them.

    Derived from MongoDB `events` (the worker adds each stored batch exactly once; shared.pipeline.summaries
    recounts it from the events on demand), so a profile never aggregates a user's whole history. It lives in
    Postgres beside the user because it is per-user relational bookkeeping: one upsert statement
    per stored batch, off the MongoDB write path that event ingestion is bound by.
    """

    __tablename__ = "activity_days"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    events: Mapped[int] = mapped_column(Integer)
    last_event_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _user_fk() -> Mapped[int]:
    return mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


class AppliedBatch(Base):
    """An event batch whose events have been added to the counters and summaries below.

    The worker inserts this row in the same transaction as the additions, so each batch is
    applied exactly once however often its message is delivered (shared.pipeline.summaries).
    """

    __tablename__ = "applied_batches"

    batch_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    events: Mapped[int] = mapped_column(Integer)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


class PurchaseDay(Base):
    """A customer's purchases on one UTC day: BG/NBD counts purchase days, not purchases."""

    __tablename__ = "purchase_days"

    user_id: Mapped[int] = _user_fk()
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    purchases: Mapped[int] = mapped_column(Integer)
    spent: Mapped[Decimal] = mapped_column(Numeric)


class CustomerSummary(Base):
    """Everything the rules, the models and RFM need about one customer (a user with a purchase).

    BG/NBD's frequency is ``purchase_days - 1``; the Gamma-Gamma spend of the repeat days is
    ``(spent - first_day_spent) / (purchase_days - 1)``.
    """

    __tablename__ = "customer_summaries"

    user_id: Mapped[int] = _user_fk()
    first_purchase_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_purchase_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    first_day: Mapped[date] = mapped_column(Date)
    last_day: Mapped[date] = mapped_column(Date, index=True)
    purchase_days: Mapped[int] = mapped_column(Integer)
    purchases: Mapped[int] = mapped_column(Integer)
    spent: Mapped[Decimal] = mapped_column(Numeric)
    first_day_spent: Mapped[Decimal] = mapped_column(Numeric)


class CustomerCategory(Base):
    """What one customer bought in one category (recommendations, per-category spend)."""

    __tablename__ = "customer_categories"

    user_id: Mapped[int] = _user_fk()
    category: Mapped[str] = mapped_column(String(100), primary_key=True)
    purchases: Mapped[int] = mapped_column(Integer)
    spent: Mapped[Decimal] = mapped_column(Numeric)


class CategorySales(Base):
    """Sales per category over all customers: the guide's "top categories" without a scan."""

    __tablename__ = "category_sales"

    category: Mapped[str] = mapped_column(String(100), primary_key=True)
    purchases: Mapped[int] = mapped_column(BigInteger)
    spent: Mapped[Decimal] = mapped_column(Numeric)


class TaskFailure(Base):
    """What a failing task raised, first and last: the reason a dead letter died
    (shared.infra.dead_letters). RabbitMQ's `x-death` header says where and when, not why."""

    __tablename__ = "task_failures"

    task_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(200))
    first_error: Mapped[str] = mapped_column(Text)
    last_error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    first_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # The people the task was about (its message's user ids): an erasure deletes their rows, since
    # an error may quote what the task held (addresses are also redacted when recorded).
    user_ids: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    # True while a retry is queued (the retry backlog); False once the task failed for good.
    retrying: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)

    __table_args__ = (
        Index("ix_task_failures_user_ids", "user_ids", postgresql_using="gin"),
        Index("ix_task_failures_retrying", "task_name", postgresql_where=text("retrying")),
    )


class Erasure(Base):
    """A person erased (shared.pipeline.erasure) whose erasure is not yet confirmed done in MongoDB and
    Redis: the reconciliation (beat) does the worker's part again for every row, and the row goes
    once MongoDB answers that nothing of the person is left, so in the end not even the id stays.
    Holds the ids only (ids are never reused): the user's, and its visitors' (their events not merged
    yet are stored under the negatives of these; None: no visitors)."""

    __tablename__ = "erasures"

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    visitor_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))


class SweepCursor(Base):
    """Where a paged sweep over all ids goes on next (the erasure sweep: shared.pipeline.erasure)."""

    __tablename__ = "sweep_cursors"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    next_id: Mapped[int] = mapped_column(BigInteger)
    cycle_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_cycle_completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


RESCORE_CHANGE_SEQ = Sequence("rescore_change_seq")


class RescorePending(Base):
    """A user whose data changed after their stored profile was computed. Written with the
    summaries (one transaction), deleted by the rescoring that saw that change (shared.pipeline.rescore)."""

    __tablename__ = "rescore_pending"

    user_id: Mapped[int] = _user_fk()
    change: Mapped[int] = mapped_column(BigInteger, RESCORE_CHANGE_SEQ, server_default=RESCORE_CHANGE_SEQ.next_value())
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


class ProfileVersion(Base):
    """The current cache version of a user's profile (shared.pipeline.profile_cache): a random token,
    replaced in the transaction of every change to the user's data (no row: "initial", not
    changed since created). Gone with the user."""

    __tablename__ = "profile_versions"

    user_id: Mapped[int] = _user_fk()
    version: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), server_default=text("gen_random_uuid()"))


class ApiKey(Base):
    """A key the API accepts (shared.infra.api_keys): its public id, what it may do, and the SHA-256 of
    the whole key, which is shown once and never stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base):
    """A message committed with the business rows it describes; the relay publishes it.

    Its id is the AMQP message id / Celery task id, so consumers can deduplicate redeliveries.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_pending",
            "created_at",
            postgresql_where=text("published_at IS NULL"),
        ),
        # Erasure deletes a person's messages, personal data in their payloads, without a scan.
        Index("ix_outbox_user_id", text("((payload ->> 'user_id'))")),
        # The relay prunes published messages older than OUTBOX_RETENTION_HOURS without a scan.
        Index("ix_outbox_published", "published_at", postgresql_where=text("published_at IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    task_name: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The X-Request-ID of the request that wrote it: the relay publishes under it (shared.infra.request_ids).
    request_id: Mapped[str | None] = mapped_column(String(128))
    # The W3C traceparent of the span that wrote it: the relay publishes it inside a span that
    # continues that trace (shared.infra.tracing). None when tracing is off.
    traceparent: Mapped[str | None] = mapped_column(String(128))


class Job(Base):
    """A fit or a validation asked for through the API (shared.pipeline.jobs): the API writes it queued and
    answers 202 at once; the analytics task that runs it moves it to running, then done with its
    result or failed with the reason. Kept in Postgres so a job's state is durable and exact
    whichever worker ran it, and readable by any API process."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_kind_finished", "kind", "finished_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    error_field: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ModelHoldout(Base):
    """One rolling-holdout check (services.analytics.validation): before a scheduled refit, the
    model in use is scored against what its customers did between its `as_of` and the last complete
    day. One row per check and purchase model, the history the dashboard and the metrics show."""

    __tablename__ = "model_holdouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(32))
    calibration_end: Mapped[date] = mapped_column(Date)
    holdout_end: Mapped[date] = mapped_column(Date)
    customers: Mapped[int] = mapped_column(Integer)
    weeks: Mapped[float] = mapped_column(Float)
    actual_repeat_purchases: Mapped[int] = mapped_column(BigInteger)
    predicted_repeat_purchases: Mapped[float] = mapped_column(Float)
    mae: Mapped[float] = mapped_column(Float)
    rmse: Mapped[float] = mapped_column(Float)
    # by_calibration_frequency and weekly, as a validation shows them
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB)


class TrackingPlanEntry(Base):
    """A custom event type's entry in the tracking plan (services.api.tracking_plan): the JSON Schema
    its metadata must satisfy and what happens to an event that does not. `version` counts the
    entry's changes; `updated_at` (the clock at the change) is what API processes compare, with
    the count of entries, to see that the plan changed."""

    __tablename__ = "tracking_plan"

    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    schema: Mapped[dict[str, Any]] = mapped_column(JSONB)
    on_violation: Mapped[str] = mapped_column(String(8))  # refuse | flag
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"), default=1)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())


class TrackingViolation(Base):
    """Custom events that broke the tracking plan, one row per (type, reason): how many were refused
    and flagged, when, and one example. The reason names the field and the rule, never a value, so
    rows do not multiply with what clients send. The example (the field, the message, the event's
    id) names its person in `example_user_id`: erasing them clears it (shared.pipeline.erasure)."""

    __tablename__ = "tracking_violations"

    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(300), primary_key=True)
    refused: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    flagged: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), default=0)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    example: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    example_user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    example_anonymous_id: Mapped[str | None] = mapped_column(String(200), index=True)


class Visitor(Base):
    """Someone who sent events with an `anonymous_id` (issue 23). Until identify links it to a user,
    its events are stored in MongoDB under `user_id = -id` (the one unique index `(user_id, event_id)`
    dedups them); the link moves them to the user (services.worker.merge). Its row is the lock that
    serialises a link against the batches storing the visitor's events (services.worker.storage)."""

    __tablename__ = "visitors"
    __table_args__ = (UniqueConstraint("anonymous_id", name="uq_visitors_anonymous_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    anonymous_id: Mapped[str] = mapped_column(Text)
    user_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    linked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PersonEvent(Base):
    """One stored event as the insight queries read it (issue 24): who, what, when, and the event's
    top-level scalar metadata (what a funnel step's `where` matches). A person is a user (positive
    id) or a visitor not yet identified (negative: `-visitors.id`), as in MongoDB `events`.

    Kept by the worker in the transaction that applies the batch (shared.pipeline.summaries), so
    exactly once like the summaries; the merge moves a visitor's rows to its user; erasure deletes a
    person's rows; `pulse summaries rebuild` recounts them from `events`, the source of truth. Funnels,
    retention and lifecycle read it through its indexes (a step's events in a time range, a person's
    events of a type), never the raw event log."""

    __tablename__ = "person_events"
    __table_args__ = (
        Index("ix_person_events_type_at", "event_type", "at", "person_id"),
        Index("ix_person_events_person_type_at", "person_id", "event_type", "at"),
    )

    person_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"), default=dict)


class Cohort(Base):
    """A saved cohort (issue 24): a named filter over persons (segment, country, RFM code, a funnel
    step reached, an event in the last N days), evaluated when a query uses it, so its members are
    always today's."""

    __tablename__ = "cohorts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
