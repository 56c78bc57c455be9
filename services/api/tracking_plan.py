"""The tracking plan: what custom events' metadata must hold, and what happens when it does not.

An entry per custom event type (Postgres `tracking_plan`): a JSON Schema (draft 2020-12) of the
event's metadata and `on_violation`, `refuse` (422 naming each field, nothing published) or `flag`
(stored, with `violations` on the document). A custom type without an entry follows
TRACKING_PLAN_UNPLANNED. The six built-in types keep their pydantic models; they are listed as
read-only entries (their models' JSON Schemas) and cannot be changed here (409).

Every API process keeps the plan in memory, compiled (one jsonschema-rs validator per entry and
version), and at most every TRACKING_PLAN_REFRESH_SECONDS asks Postgres one cheap question (count
of entries, latest change, sum of versions): when the answer moved, it reads the plan again. A
change thus applies everywhere within about that long; only requests with custom events ask.

Schemas are compiled safely: no remote `$ref` is ever fetched (a schema that needs one is
refused at PUT), and `pattern`s run on the `regex` crate's linear-time engine (no catastrophic
backtracking: a pattern with look-around or back-references is refused at PUT).

Violations (refused and flagged alike) are counted in Postgres `tracking_violations`, one row per
(type, reason), with an example: the field, the validator's message and the event's id, kept with
the person's ids so that erasing the person clears it (shared.pipeline.erasure). The row is written
while holding the person's user row (FOR KEY SHARE), the row an erasure takes FOR UPDATE first: an
example either commits before the erasure (which then clears it) or sees the user gone and is not
kept. `/metrics` counts them (pulse_tracking_violations_total, from Redis: shared.infra.counters).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import jsonschema_rs
from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import case, func, select
from sqlalchemy.dialects.postgresql import insert

from services.api.problems import FieldProblem, Problem, ProblemError
from shared.contracts.schemas import EVENT_TYPES, ActivityEvent, ProductMetadata, PurchaseMetadata
from shared.contracts.settings import get_settings
from shared.contracts.tables import TrackingPlanEntry, TrackingViolation, User
from shared.infra import counters
from shared.infra.db import session_scope
from shared.infra.logging import get_logger
from shared.infra.retry import TRANSIENT_ERRORS

log = get_logger(__name__)

tracking_plan_bp = APIBlueprint("tracking_plan", __name__, url_prefix="/api/tracking-plan",
                                abp_tags=[Tag(name="tracking plan")])

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# A schema is a description, not data: these bound what one entry costs to store, compile and keep.
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 20  # under the request body's own bound (services.api.json_body), so that this one names `schema`
# A validator's compiled patterns: enough for any real pattern, not for a pattern built to fill memory.
_REGEX_SIZE_LIMIT = 1 << 20
# What one event reports: a metadata object can break a schema in many places at once.
MAX_VIOLATIONS_PER_EVENT = 10
REASON_MAX = 300
EXAMPLE_MESSAGE_MAX = 500
# The label of violations of types with no plan entry on /metrics: one series, not one per name a client made up.
UNPLANNED_LABEL = "(unplanned)"


# --------------------------------------------------------------------------- schemas


class SchemaProblem(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _no_retrieval(uri: str) -> Any:
    # A schema's `$ref` to another address would make every API process fetch it (from anywhere the
    # plan's author chose, inside the network too): refused, the schema must be self-contained.
    raise ValueError(f"remote references are not fetched ({uri}); put the definition in the schema's $defs")


def _field(parts: Iterator[str | int] | list[str | int], root: str) -> str:
    path = root
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _bad_text(value: Any, path: list[str | int]) -> tuple[list[str | int], str] | None:
    """Where `value` holds a key or string Postgres' jsonb cannot store (a NUL, a lone surrogate), if anywhere."""
    stack: list[tuple[Any, list[str | int]]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        texts = [item] if isinstance(item, str) else list(item) if isinstance(item, dict) else []
        for text in texts:
            if "\x00" in text:
                return where, "must not hold a NUL character"
            try:
                text.encode()
            except UnicodeEncodeError:
                return where, "must be valid Unicode (no lone surrogates)"
        if isinstance(item, dict):
            stack.extend((child, [*where, name]) for name, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, [*where, index]) for index, child in enumerate(item))
    return None


def _depth(value: Any, limit: int) -> bool:
    """Whether `value` nests no deeper than `limit` (without recursing past it)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return False
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return True


def compile_schema(schema: Any) -> jsonschema_rs.Validator:
    """A validator of custom events' metadata, or SchemaProblem naming where `schema` is wrong."""
    if not isinstance(schema, dict):
        raise SchemaProblem("schema", "must be a JSON object (a JSON Schema of the event's metadata)")
    if len(json.dumps(schema, separators=(",", ":")).encode()) > MAX_SCHEMA_BYTES:
        raise SchemaProblem("schema", f"at most {MAX_SCHEMA_BYTES} bytes as JSON")
    if not _depth(schema, MAX_SCHEMA_DEPTH):
        raise SchemaProblem("schema", f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
    if (bad := _bad_text(schema, [])) is not None:
        raise SchemaProblem(_field(bad[0], "schema"), bad[1])
    if "$schema" in schema and schema["$schema"] != DRAFT_2020_12:
        raise SchemaProblem("schema.$schema", f"must be {DRAFT_2020_12} (or absent)")
    try:
        jsonschema_rs.meta.validate({**schema, "$schema": DRAFT_2020_12})
    except jsonschema_rs.ValidationError as exc:
        raise SchemaProblem(_field(list(exc.instance_path), "schema"), exc.message[:EXAMPLE_MESSAGE_MAX]) from None
    except jsonschema_rs.ReferencingError as exc:
        raise SchemaProblem("schema", str(exc)[:EXAMPLE_MESSAGE_MAX]) from None
    try:
        return jsonschema_rs.Draft202012Validator(
            schema, retriever=_no_retrieval, validate_formats=False,
            pattern_options=jsonschema_rs.RegexOptions(size_limit=_REGEX_SIZE_LIMIT, dfa_size_limit=_REGEX_SIZE_LIMIT),
        )
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        where = _field(list(getattr(exc, "instance_path", None) or []), "schema")
        raise SchemaProblem(where, message.split("\n", 1)[0][:EXAMPLE_MESSAGE_MAX]) from None


def _built_in_schemas() -> dict[str, dict[str, Any]]:
    activity = ActivityEvent.model_json_schema()["properties"]["metadata"]
    schemas = {"user_purchase": PurchaseMetadata.model_json_schema(),
               "add_to_cart": ProductMetadata.model_json_schema()}
    schemas.update({name: activity for name in ("page_view", "login", "logout", "search")})
    return schemas


BUILT_IN_SCHEMAS = _built_in_schemas()


# --------------------------------------------------------------------------- the plan, per process


@dataclass(frozen=True)
class PlanEntry:
    event_type: str
    schema: dict[str, Any]
    on_violation: str
    version: int
    updated_at: datetime
    validator: jsonschema_rs.Validator


class _Plan:
    """This process's copy of the plan (see the module's docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, PlanEntry] = {}
        self.fingerprint: tuple[Any, ...] | None = None
        self.checked_at = float("-inf")

    def current(self) -> dict[str, PlanEntry]:
        if time.monotonic() - self.checked_at < get_settings().tracking_plan_refresh_seconds:
            return self.entries
        with self.lock:
            if time.monotonic() - self.checked_at < get_settings().tracking_plan_refresh_seconds:
                return self.entries  # another thread re-read it meanwhile
            try:
                self._refresh()
            except TRANSIENT_ERRORS:
                if self.fingerprint is None:
                    raise  # never read: the outage's 503
                # Postgres is down: the plan read last goes on deciding (it is what was in force).
                log.warning("tracking_plan_unreadable")
            self.checked_at = time.monotonic()
            return self.entries

    def _refresh(self) -> None:
        with session_scope() as session:
            fingerprint = tuple(session.execute(select(
                func.count(), func.max(TrackingPlanEntry.updated_at),
                func.coalesce(func.sum(TrackingPlanEntry.version), 0),
            )).one())
            if fingerprint == self.fingerprint:
                return
            rows = session.scalars(select(TrackingPlanEntry)).all()
            entries: dict[str, PlanEntry] = {}
            for row in rows:
                known = self.entries.get(row.event_type)
                if known is not None and known.version == row.version and known.updated_at == row.updated_at:
                    entries[row.event_type] = known  # compiled already
                    continue
                try:
                    validator = compile_schema(row.schema)
                except SchemaProblem as exc:  # checked at PUT; only a row written by hand gets here
                    log.error("tracking_plan_entry_unusable", event_type=row.event_type, error=exc.message)
                    continue
                entries[row.event_type] = PlanEntry(row.event_type, row.schema, row.on_violation, row.version,
                                                    row.updated_at, validator)
        self.entries, self.fingerprint = entries, fingerprint

    def forget(self) -> None:
        """Re-read on the next request (this process changed the plan: it sees its own change at once)."""
        with self.lock:
            self.checked_at = float("-inf")


PLAN = _Plan()


# --------------------------------------------------------------------------- checking events


@dataclass(frozen=True)
class Violation:
    field: str  # e.g. metadata.items[2].price (prefixed with events[i]. in a batch's answer)
    reason: str  # the field (indices as [*]) and the rule broken: never a value the client sent
    message: str  # the validator's words, values included


def _violations(entry: PlanEntry, metadata: dict[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    for error in entry.validator.iter_errors(metadata):
        parts: list[str | int] = list(error.instance_path)
        schema_path = [str(step) for step in error.schema_path]
        keyword = schema_path[-1] if schema_path else "schema"
        # The keys the plan names (`properties`, `required`): only those appear in the reason.
        named = {step for before, step in zip(schema_path, schema_path[1:], strict=False) if before == "properties"}
        if keyword == "required":
            # The error is reported at the object; the field is the property that is missing.
            missing = getattr(error.kind, "property", None)
            if isinstance(missing, str):
                parts.append(missing)
                named.add(missing)
        field = _field(parts, "metadata")
        # Indices as [*], and keys the plan does not name (`additionalProperties`, `patternProperties`:
        # the client's own, a person's name turned into a key) as .*: the reason is a rule of the
        # plan, not one row per position or key a client sent, and never the client's text.
        general = "metadata" + "".join(
            "[*]" if isinstance(part, int) else f".{part}" if part in named else ".*" for part in parts)
        found.append(Violation(field, f"{general}: {keyword}"[:REASON_MAX], error.message[:EXAMPLE_MESSAGE_MAX]))
        if len(found) == MAX_VIOLATIONS_PER_EVENT:
            break
    return found


@dataclass(frozen=True)
class _Seen:
    event_type: str
    reason: str
    action: Literal["refused", "flagged"]
    label: str  # the /metrics label of the type
    example: dict[str, Any]
    user_id: int
    anonymous_id: str | None


def _unplanned(event_type: str) -> Violation:
    return Violation("event_type", "event_type: no tracking-plan entry",
                     f"{event_type!r} has no tracking-plan entry (TRACKING_PLAN_UNPLANNED)")


def check(messages: list[dict[str, Any]], unique: list[dict[str, Any]]) -> None:
    """The tracking plan's verdict on a request's events (services.api.events._accept, once the
    messages are built and collapsed): raises the 422 naming each field when an event its plan
    entry says `refuse` breaks it (nothing is published); adds `violations` to the messages of
    flagged events; records both. Requests of built-in events only do nothing here."""
    custom = [m for m in unique if m["event_type"] not in EVENT_TYPES]
    if not custom:
        return
    plan = PLAN.current()
    unplanned = get_settings().tracking_plan_unplanned
    position = {id(message): index for index, message in reversed(list(enumerate(messages)))}
    single = len(messages) == 1 and bool(request.endpoint) and str(request.endpoint).endswith("publish_event")
    refusals: list[FieldProblem] = []
    seen: list[_Seen] = []
    for message in custom:
        action: str
        entry = plan.get(message["event_type"])
        if entry is None:
            if unplanned == "accept":
                continue
            broken, action, label = [_unplanned(message["event_type"])], unplanned, UNPLANNED_LABEL
        else:
            broken, action, label = _violations(entry, message["metadata"]), entry.on_violation, entry.event_type
            if not broken:
                continue
        prefix = "" if single else f"events[{position[id(message)]}]."
        outcome: Literal["refused", "flagged"] = "refused" if action == "refuse" else "flagged"
        for violation in broken:
            example = {"event_id": message["event_id"], "field": violation.field, "message": violation.message}
            # A visitor's event may reach here without a user id (0: no user row; its anonymous id names it).
            seen.append(_Seen(message["event_type"], violation.reason, outcome, label, example,
                              int(message.get("user_id") or 0), message.get("anonymous_id")))
        if outcome == "refused":
            refusals.extend(FieldProblem(field=prefix + v.field, message=v.message) for v in broken)
        else:
            message["violations"] = [f"{v.field}: {v.message}" for v in broken]
    if refusals:
        # The request is refused as a whole: its flagged events are not stored, so not counted as flagged.
        _record([item for item in seen if item.action == "refused"])
        raise ProblemError(422, "Events break the tracking plan", refusals)
    _record(seen)


def _record(seen: list[_Seen]) -> None:
    """Count what was seen (Postgres rows, Redis totals). Its loss in an outage loses counts, never
    an event: the verdict stands either way."""
    if not seen:
        return
    totals: dict[str, int] = {}
    for item in seen:
        label = f"{item.label}|{item.action}"
        totals[label] = totals.get(label, 0) + 1
    counters.add_labelled(counters.TRACKING_VIOLATIONS, totals)
    try:
        _upsert(seen)
    except TRANSIENT_ERRORS as exc:
        log.warning("tracking_violations_unrecorded", error=type(exc).__name__, count=len(seen))


def _upsert(seen: list[_Seen]) -> None:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    people = sorted({item.user_id for item in seen if item.user_id > 0})
    with session_scope() as session:
        # Held until the commit: an erasure of one of them waits for this example, or this sees them gone.
        present = set(session.scalars(
            select(User.id).where(User.id.in_(people)).order_by(User.id).with_for_update(key_share=True)
        )) if people else set()
        for item in seen:
            row = rows.setdefault((item.event_type, item.reason), {
                "event_type": item.event_type, "reason": item.reason, "refused": 0, "flagged": 0,
                "example": None, "example_user_id": None, "example_anonymous_id": None})
            row[item.action] += 1
            # Visitors (not-positive ids) have no user row; their examples are cleared by their anonymous id.
            if item.user_id in present or item.user_id <= 0:
                row.update(example=item.example, example_user_id=item.user_id or None,
                           example_anonymous_id=item.anonymous_id)
        # In key order, as every request writes them: two requests never wait for each other in a cycle.
        values = [rows[k] for k in sorted(rows)]
        statement = insert(TrackingViolation).values(values)
        excluded = statement.excluded
        keep_old = excluded.example.is_(None)
        session.execute(statement.on_conflict_do_update(
            index_elements=["event_type", "reason"],
            set_={
                "refused": TrackingViolation.refused + excluded.refused,
                "flagged": TrackingViolation.flagged + excluded.flagged,
                "last_seen": func.now(),
                "example": case((keep_old, TrackingViolation.example), else_=excluded.example),
                "example_user_id": case((keep_old, TrackingViolation.example_user_id),
                                        else_=excluded.example_user_id),
                "example_anonymous_id": case((keep_old, TrackingViolation.example_anonymous_id),
                                             else_=excluded.example_anonymous_id),
            },
        ))


# --------------------------------------------------------------------------- the API

EventTypeName = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="The custom event type")


class EntryPath(BaseModel):
    name: str = EventTypeName


class EntryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: dict[str, Any] = Field(alias="schema", description="A JSON Schema (draft 2020-12) of the event's "
                                    "metadata; self-contained (no remote $ref)")
    on_violation: Literal["refuse", "flag"] = Field(description="refuse: 422 naming each field, nothing stored; "
                                                    "flag: stored with `violations` on the event")


class EntryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    event_type: str
    schema_: dict[str, Any] = Field(alias="schema")
    on_violation: Literal["refuse", "flag"]
    version: int | None = Field(description="Changes of the entry (null for a built-in type)")
    updated_at: datetime | None
    read_only: bool = Field(description="A built-in type: its model decides, it cannot be changed here")


class PlanOut(BaseModel):
    items: list[EntryOut]
    unplanned: Literal["accept", "flag", "refuse"] = Field(description="TRACKING_PLAN_UNPLANNED: what happens to "
                                                           "custom types with no entry")


class ViolationOut(BaseModel):
    event_type: str
    reason: str = Field(description="The field (array indices as [*]) and the JSON Schema keyword it broke")
    count: int
    refused: int
    flagged: int
    first_seen: datetime
    last_seen: datetime
    example: dict[str, Any] | None = Field(description="The latest event's id, field and message (cleared when "
                                           "its person is erased)")


class ViolationList(BaseModel):
    items: list[ViolationOut]


def _built_in(name: str) -> EntryOut:
    return EntryOut(event_type=name, schema_=BUILT_IN_SCHEMAS[name], on_violation="refuse", version=None,
                    updated_at=None, read_only=True)


def _out(row: TrackingPlanEntry) -> EntryOut:
    return EntryOut(event_type=row.event_type, schema_=row.schema, on_violation=row.on_violation,
                    version=row.version, updated_at=row.updated_at, read_only=False)


def _dump(entry: EntryOut) -> dict[str, Any]:
    return entry.model_dump(mode="json", by_alias=True)


def _refuse_built_in(name: str) -> None:
    if name in EVENT_TYPES:
        raise ProblemError(409, f"{name} is a built-in event type: its model decides, it is not in the plan's hands")


@tracking_plan_bp.get("", summary="The tracking plan: every entry, built-in types included (read-only)",
                      responses={200: PlanOut})
def get_plan():
    with session_scope() as session:
        rows = session.scalars(select(TrackingPlanEntry).order_by(TrackingPlanEntry.event_type)).all()
        items = [_built_in(name) for name in EVENT_TYPES] + [_out(row) for row in rows]
    return PlanOut(items=items, unplanned=get_settings().tracking_plan_unplanned).model_dump(mode="json", by_alias=True)


@tracking_plan_bp.get("/event-types/<name>", summary="One event type's entry", responses={200: EntryOut, 404: Problem})
def get_entry(path: EntryPath):
    if path.name in EVENT_TYPES:
        return _dump(_built_in(path.name))
    with session_scope() as session:
        row = session.get(TrackingPlanEntry, path.name)
        if row is None:
            raise ProblemError(404, f"No tracking-plan entry for {path.name}")
        return _dump(_out(row))


@tracking_plan_bp.put(
    "/event-types/<name>", summary="Register or change a custom event type's schema (admin)",
    description="The schema is checked against the JSON Schema 2020-12 meta-schema (422 naming `schema...`). "
    "It must be self-contained (a remote `$ref` is refused) and its `pattern`s must suit a linear-time regex "
    "engine (no look-around, no back-references). Every API process applies the change within "
    "TRACKING_PLAN_REFRESH_SECONDS. A built-in type answers 409.",
    responses={200: EntryOut, 201: EntryOut, 409: Problem, 422: Problem},
)
def put_entry(path: EntryPath, body: EntryRequest):
    _refuse_built_in(path.name)
    try:
        compile_schema(body.schema_)
    except SchemaProblem as exc:
        raise ProblemError(422, f"Invalid schema: {exc.field}",
                           [FieldProblem(field=exc.field, message=exc.message)]) from None
    with session_scope() as session:
        statement = insert(TrackingPlanEntry).values(event_type=path.name, schema=body.schema_,
                                                     on_violation=body.on_violation)
        row = session.execute(statement.on_conflict_do_update(
            index_elements=["event_type"],
            set_={"schema": statement.excluded.schema, "on_violation": statement.excluded.on_violation,
                  "version": TrackingPlanEntry.version + 1, "updated_at": func.clock_timestamp()},
        ).returning(TrackingPlanEntry.version, TrackingPlanEntry.updated_at)).one()
        entry = EntryOut(event_type=path.name, schema_=body.schema_, on_violation=body.on_violation,
                         version=row.version, updated_at=row.updated_at, read_only=False)
    PLAN.forget()
    return _dump(entry), 201 if entry.version == 1 else 200


@tracking_plan_bp.delete("/event-types/<name>", summary="Remove a custom event type's entry (admin)",
                         description="Its events then follow TRACKING_PLAN_UNPLANNED. A built-in type answers 409.",
                         responses={204: None, 404: Problem, 409: Problem})
def delete_entry(path: EntryPath):
    _refuse_built_in(path.name)
    with session_scope() as session:
        row = session.get(TrackingPlanEntry, path.name)
        if row is None:
            raise ProblemError(404, f"No tracking-plan entry for {path.name}")
        session.delete(row)
    PLAN.forget()
    return Response(status=204)


@tracking_plan_bp.get("/violations", summary="What custom events broke of the plan: per type and reason",
                      description="Refused and flagged events alike, most recent first: count, last seen, "
                      "an example (the latest event's id, field and message).",
                      responses={200: ViolationList})
def list_violations():
    with session_scope() as session:
        rows = session.scalars(select(TrackingViolation).order_by(
            TrackingViolation.last_seen.desc(), TrackingViolation.event_type, TrackingViolation.reason,
        ).limit(1000)).all()
        items = [ViolationOut(event_type=r.event_type, reason=r.reason, count=r.refused + r.flagged, refused=r.refused,
                              flagged=r.flagged, first_seen=r.first_seen, last_seen=r.last_seen, example=r.example)
                 for r in rows]
    return ViolationList(items=items).model_dump(mode="json")
