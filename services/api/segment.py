"""Segment's HTTP tracking API on /v1: the SDKs people already use send to Pulse unchanged.

segment-analytics-python, rudder-sdk-python and analytics.js post Segment messages (track, page,
screen, identify, alias, group) with the write key as the HTTP Basic user name or as `writeKey`
in the body. Each message is translated into a Pulse event (docs/segment.md has the mapping) and
goes through the one accept path of the JSON API (services.api.events._accept): the same models,
the same collapsing of copies, the same user check, the same publishing. `messageId` is the
event id, so an SDK re-sending a batch stores nothing twice.

A batch answers 200 when its request is sound, even when some of its messages are refused: the
SDKs retry a whole batch on any other answer, and one bad message must not make them re-send the
good ones for ever (Segment's own behaviour). The refused ones are logged, counted
(`pulse_segment_messages_refused`) and listed in the answer. A request that is unsound as a whole
(no usable key, not JSON, too large) answers 4xx with `code` and `message`, which the SDKs read:
rudder-sdk-python retries a 4xx whose body has no `code`.

What happens before Flask (gzip bodies, the browser's CORS preflight, analytics.js's short paths)
is SegmentTransport's, below.
"""
from __future__ import annotations

import importlib
import io
import json
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from flask import request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from services.api.events import _accept
from services.api.problems import PROBLEM_JSON, FieldProblem, Problem, ProblemError, error_field
from shared.contracts.schemas import Event, _EventBase
from shared.contracts.settings import get_settings
from shared.infra import counters
from shared.infra.logging import get_logger

log = get_logger(__name__)

PREFIX = "/v1"
BLUEPRINT = "segment"
# Segment's documented limits (and what its SDKs hold their batches under).
MESSAGE_MAX_BYTES = 32 * 1024
BATCH_MAX_BYTES = 500 * 1024
# analytics.js (@segment/analytics-next) posts to short paths under its apiHost.
SHORT_PATHS = {"t": "track", "p": "page", "i": "identify", "a": "alias", "g": "group", "s": "screen", "b": "batch"}
# analytics.js's own telemetry: answered and dropped (nothing in it is about the site's visitors).
METRICS_PATH = f"{PREFIX}/m"
KINDS = ("track", "page", "screen", "identify", "alias", "group")
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PAGE_FIELDS = ("name", "url", "path", "referrer", "title")
# ActivityEvent's metadata strings hold at most this many characters: a longer URL is cut, not lost.
PAGE_FIELD_MAX = 1000
_events = TypeAdapter(Event)

segment_bp = APIBlueprint(BLUEPRINT, __name__, url_prefix=PREFIX, abp_tags=[Tag(name="segment")])


def anonymous_visitors() -> bool:
    """Whether this Pulse takes events of anonymous visitors (`anonymous_id`, issue 23 item 1)."""
    return "anonymous_id" in _EventBase.model_fields


def link(anonymous_id: str, user_id: int) -> bool:
    """identify and alias: the visitor `anonymous_id` is the user from now on, and their history
    is the user's (services.api.identify, which raises ProblemError 409/422)."""
    try:
        identify = importlib.import_module("services.api.identify")
    except ModuleNotFoundError:
        raise Refused("anonymousId", "this Pulse does not link anonymous visitors to users yet") from None
    return bool(identify.link(anonymous_id, user_id))


class Refused(Exception):
    """A message Pulse does not take: which of its fields, and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Link:
    anonymous_id: str
    user_id: int


# The fields Pulse reads or checks in a message, by kind ("*": every kind), and what each must be
# when present and not null (the SDKs send null for what is absent). The OpenAPI document is made
# from the same table (`_request_body`).
FIELDS: dict[str, dict[str, str]] = {
    "*": {"type": "string", "anonymousId": "visitor", "messageId": "message_id", "timestamp": "instant",
          "sentAt": "instant", "context": "object", "integrations": "object", "writeKey": "string"},
    "track": {"event": "string", "properties": "object"},
    "page": {"name": "string", "category": "string", "properties": "object"},
    "screen": {"name": "string", "category": "string", "properties": "object"},
    "identify": {"traits": "object"},
    "alias": {"previousId": "visitor"},
    "group": {"groupId": "string", "traits": "object"},
}
VISITOR_TEXT = re.compile(r"[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*")
MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
USER_ID_TEXT = re.compile(r"^ *([0-9]{1,10}) *$")
SCHEMA_OF: dict[str, dict[str, Any]] = {
    "string": {"type": "string"}, "object": {"type": "object"},
    "instant": {"type": "string", "format": "date-time"},
    "visitor": {"type": "string", "maxLength": 200, "pattern": f"^{VISITOR_TEXT.pattern}$"},
    "message_id": {"type": "string", "pattern": f"^{MESSAGE_ID.pattern}$"},
}
NOTES = {"anonymousId": "The visitor's id (Pulse's anonymous_id)", "messageId": "The event id",
         "context": "Read for context.page only; ip, userAgent and the rest are not stored",
         "traits": "Not stored: personal data", "writeKey": "The API key, when not sent as the Basic user name"}


def _check_fields(message: dict[str, Any], kind: str) -> None:
    for name, kind_of in {**FIELDS["*"], **FIELDS[kind]}.items():
        value = message.get(name)
        if value is None:
            continue
        if kind_of == "object" and not isinstance(value, dict):
            raise Refused(name, "must be an object")
        if kind_of != "object" and not isinstance(value, str):
            raise Refused(name, "must be a string")
        if kind_of == "instant":
            _instant(value, name)
        if kind_of == "visitor" and (len(value) > 200 or not VISITOR_TEXT.fullmatch(value)):
            raise Refused(name, "must be 1 to 200 printable characters")
        if kind_of == "message_id" and not MESSAGE_ID.fullmatch(value):
            raise Refused(name, "must be 1 to 64 letters, digits, '_', '.', ':' or '-'")


def _user_id(value: Any, field: str = "userId") -> int | None:
    if value is None:
        return None
    number = int(digits.group(1)) if isinstance(value, str) and (digits := USER_ID_TEXT.fullmatch(value)) \
        else value if isinstance(value, int) and not isinstance(value, bool) else None
    if number is not None:
        if not 0 < number < 2**31:  # users.id is a Postgres integer; identify and alias query it as one
            raise Refused(field, "must be a user id from 1 to 2147483647")
        return number
    raise Refused(field, "must be a Pulse user id (digits); an e-mail address or another system's id is not")


def _text(message: dict[str, Any], field: str) -> str | None:
    value = message.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Refused(field, "must be a non-empty string")
    return value.strip()


def _instant(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refused(field, "must be an ISO 8601 string")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(field, "is not an ISO 8601 instant") from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant


def event_name(name: Any) -> str:
    """"Product Added" -> "product_added": lower case, each run of other characters one `_`."""
    if not isinstance(name, str):
        raise Refused("event", "must be a string (the event's name)")
    normalised = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not EVENT_NAME.fullmatch(normalised):
        raise Refused("event", f"{name!r} does not make an event type (a letter first, at most 64 characters)")
    return normalised


def _object(message: dict[str, Any], field: str) -> dict[str, Any]:
    value = message.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Refused(field, "must be an object")
    return value


def _page_metadata(message: dict[str, Any], kind: str) -> dict[str, Any]:
    properties = _object(message, "properties")
    page = _object(_object(message, "context"), "page") if kind == "page" else {}
    metadata: dict[str, Any] = {}
    for name in PAGE_FIELDS:
        value = message.get(name) if name == "name" and message.get(name) is not None else properties.get(name)
        if value is None:
            value = page.get(name)
        if isinstance(value, str) and value.strip():
            metadata[name] = value.strip()[:PAGE_FIELD_MAX]
    return metadata


def stated_timestamp(message: dict[str, Any], sent_at: datetime | None) -> datetime | None:
    """The message's timestamp as its client stated it, when `translate` corrected it by a sentAt
    (the message's own or the batch's): kept as the event's `original_timestamp`, as the JSON API
    keeps it (docs/api.md, Client clocks). None when nothing was corrected."""
    timestamp = _instant(message.get("timestamp"), "timestamp")
    sent = _instant(message.get("sentAt"), "sentAt") or sent_at
    return timestamp if timestamp is not None and sent is not None else None


def translate(message: Any, kind: str | None, received_at: datetime, sent_at: datetime | None) -> Any:
    """One Segment message as a validated Pulse event, a Link (identify, alias), or None (an
    identify with nothing to link: its traits are personal data Pulse does not keep). Raises Refused."""
    if not isinstance(message, dict):
        raise Refused("body", "a message must be a JSON object")
    if len(json.dumps(message, separators=(",", ":"))) > MESSAGE_MAX_BYTES:
        raise Refused("body", f"a message holds at most {MESSAGE_MAX_BYTES} bytes (Segment's limit)")
    kind = message.get("type") if kind is None else kind
    if kind not in KINDS:
        raise Refused("type", f"must be one of {', '.join(KINDS)}")
    _check_fields(message, kind)
    user_id = _user_id(message.get("userId"))
    anonymous_id = _text(message, "anonymousId")
    if user_id is None and anonymous_id is None and kind != "alias":
        raise Refused("userId", "a message needs userId or anonymousId")
    if kind == "group":
        raise Refused("type", "group calls are not stored: Pulse has no accounts or companies")
    if kind == "alias":
        previous = _text(message, "previousId")
        if previous is None or user_id is None:
            raise Refused("previousId" if previous is None else "userId", "alias needs previousId and userId")
        return Link(previous, user_id)
    if kind == "identify":
        return Link(anonymous_id, user_id) if anonymous_id is not None and user_id is not None else None
    if kind == "track":
        event_type = event_name(message.get("event"))
        metadata = _object(message, "properties")
    else:
        event_type, metadata = "page_view", _page_metadata(message, kind)
    event: dict[str, Any] = {"event_type": event_type, "metadata": metadata}
    if user_id is not None:
        event["user_id"] = user_id
    if anonymous_id is not None and anonymous_visitors():
        event["anonymous_id"] = anonymous_id
    elif user_id is None:
        raise Refused("userId", "needed: this Pulse does not store events of anonymous visitors yet")
    if message.get("messageId") is not None:
        event["event_id"] = message["messageId"]
    timestamp = _instant(message.get("timestamp"), "timestamp")
    sent = _instant(message.get("sentAt"), "sentAt") or sent_at
    if timestamp is not None:
        # Segment's clock rule: the client's clock may be wrong, the interval it measured is not.
        try:
            event["timestamp"] = (received_at - (sent - timestamp) if sent is not None else timestamp).isoformat()
        except OverflowError:  # a sentAt and timestamp millennia apart
            raise Refused("timestamp", "is too far from sentAt to be dated") from None
    try:
        return _events.validate_python(event)
    except ValidationError as invalid:
        error = invalid.errors()[0]
        field = {"event_id": "messageId", "user_id": "userId", "anonymous_id": "anonymousId",
                 "metadata": "properties"}.get(error_field(error).split(".", 1)[0], "") or error_field(error)
        raise Refused(field, f"{error_field(error)}: {error['msg']}") from None


@dataclass
class Outcome:
    accepted: int = 0
    linked: int = 0
    refused: list[FieldProblem] = field(default_factory=list)

    def refuse(self, index: int, where: str, reason: str) -> None:
        self.refused.append(FieldProblem(field=f"batch[{index}].{where}", message=reason))


def process(messages: list[Any], kind: str | None, sent_at: datetime | None, single: bool) -> Outcome:
    """Translate and accept the messages; the refused are named in the Outcome (single: raised)."""
    received_at = datetime.now(UTC)
    outcome = Outcome()
    events: list[tuple[int, Any]] = []
    stated: dict[int, datetime | None] = {}  # by message index: the client's own timestamp, when corrected
    links: list[tuple[int, Link]] = []
    for index, message in enumerate(messages):
        try:
            item = translate(message, kind, received_at, sent_at)
        except Refused as refused:
            if single:
                raise ProblemError(422, f"The message was refused: {refused.reason}",
                                   [FieldProblem(field=refused.field, message=refused.reason)]) from None
            outcome.refuse(index, refused.field, refused.reason)
            continue
        if isinstance(item, Link):
            links.append((index, item))
        elif item is not None:
            events.append((index, item))
            stated[index] = stated_timestamp(message, sent_at)  # translate has checked both instants
    while events:
        try:
            _accept([event for _, event in events], stated=[stated[index] for index, _ in events])
        except ProblemError as problem:
            # _accept refuses a request as a whole, naming `events[i]...` of each event at fault
            # (an unknown user, conflicting copies of one messageId, the tracking plan): those are
            # dropped and the rest accepted. Nothing was published: the refusal comes first.
            at_fault = {int(found.group(1)): error for error in problem.errors or ()
                        if (found := re.match(r"events\[(\d+)\]", error.field))}
            if single and problem.status == 422 and at_fault:  # named as the message names them
                raise ProblemError(422, problem.detail, [FieldProblem(field=_segment_field(error.field),
                                   message=error.message) for error in problem.errors or ()]) from None
            if single or problem.status != 422 or not at_fault:
                raise
            for position, error in at_fault.items():
                outcome.refuse(events[position][0], _segment_field(error.field), error.message)
            events = [pair for position, pair in enumerate(events) if position not in at_fault]
            continue
        outcome.accepted = len(events)
        break
    for index, item in links:
        try:
            outcome.linked += link(item.anonymous_id, item.user_id)
        except Refused as refused:
            if single:
                raise ProblemError(422, f"The message was refused: {refused.reason}",
                                   [FieldProblem(field=refused.field, message=refused.reason)]) from None
            outcome.refuse(index, refused.field, refused.reason)
        except ProblemError as problem:  # 409: the anonymous id is another user's; 422: no such user
            if single or problem.status not in (409, 422):
                raise
            named = problem.errors[0].field if problem.errors else ("anonymousId" if problem.status == 409
                                                                    else "userId")
            outcome.refuse(index, _segment_field(named), problem.detail)
    if outcome.refused:
        counters.add(**{counters.SEGMENT_REFUSED: len(outcome.refused)})
        log.warning("segment_messages_refused", count=len(outcome.refused),
                    refused=[problem.model_dump() for problem in outcome.refused[:20]])
    return outcome


def _segment_field(pulse_field: str) -> str:
    field = re.sub(r"^events\[\d+\]\.?", "", pulse_field)
    # A field of the metadata (the tracking plan's refusals name them) is one of the message's properties.
    field = re.sub(r"^metadata(?=\.|\[|$)", "properties", field)
    return {"user_id": "userId", "event_id": "messageId", "anonymous_id": "anonymousId"}.get(field, field or "body")


def _body() -> dict[str, Any]:
    """The request's JSON object, whatever its Content-Type (analytics.js sends text/plain, to
    spare the browser a preflight when it sends no Authorization header)."""
    if len(request.get_data(cache=True)) > BATCH_MAX_BYTES:  # a chunked body: no Content-Length to check before
        raise ProblemError(413, f"A request body holds at most {BATCH_MAX_BYTES} bytes")
    try:
        body = request.get_json(force=True)
    except Exception:  # werkzeug's BadRequest, or json_body's limits: a malformed body
        raise ProblemError(400, "The body is not JSON") from None
    if not isinstance(body, dict):
        raise ProblemError(400, "The body must be a JSON object")
    return body


class SegmentAccepted(BaseModel):
    success: bool = Field(True, description="Always true: the request was taken (Segment's answer)")
    accepted: int = Field(description="Events handed to the pipeline (a re-sent messageId is stored once)")
    linked: int = Field(0, description="New links of an anonymous id to a user (identify, alias)")
    refused: list[FieldProblem] = Field(default_factory=list, description="Messages not taken, each with why: "
                                        "`batch[i].<field>`")


def _answer(outcome: Outcome) -> tuple[dict[str, Any], int]:
    return SegmentAccepted(accepted=outcome.accepted, linked=outcome.linked,
                           refused=outcome.refused).model_dump(), 200


def _nullable(schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    described = {"description": description} if description else {}
    return {"anyOf": [schema, {"type": "null"}], **described}


def _request_body(kind: str) -> dict[str, Any]:
    """The OpenAPI body of each /v1 operation, from FIELDS (what `_check_fields` enforces)."""
    if kind == "batch":
        schema: dict[str, Any] = {"type": "object", "required": ["batch"], "properties": {
            "batch": {"type": "array", "items": {"type": "object"}, "description": "Segment messages, each with "
                      "its `type`; one that Pulse does not take is listed in `refused`, the others accepted"},
            "sentAt": _nullable(SCHEMA_OF["instant"]), "writeKey": _nullable(SCHEMA_OF["string"])}}
    else:
        fields = {**FIELDS["*"], **FIELDS[kind]}
        schema = {"type": "object", "properties": {
            "userId": _nullable({"anyOf": [{"type": "string", "pattern": USER_ID_TEXT.pattern},
                                           {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}]},
                                "A Pulse user id (digits)"),
            **{name: _nullable(SCHEMA_OF[kind_of], NOTES.get(name)) for name, kind_of in fields.items()}}}
        if kind == "alias":
            schema["required"] = ["previousId", "userId"]
        else:  # a user, a visitor, or both
            schema["anyOf"] = [{"required": ["userId"], "properties": {"userId": {"not": {"type": "null"}}}},
                               {"required": ["anonymousId"], "properties": {"anonymousId": {"type": "string"}}}]
        if kind == "track":
            schema["required"] = ["event"]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_DESCRIPTION = ("Segment's HTTP tracking API (docs/segment.md): the write key (an API key with the ingest "
                "scope) as the HTTP Basic user name, or `Authorization: Bearer`, or `writeKey` in the body. "
                "Bodies may be gzip-compressed and sent as text/plain. Errors carry `code` and `message`. ")


def _view(kind: str):
    def view():
        body = _body()
        sent_at = _sent_at(body)
        if kind == "batch":
            messages = body.get("batch")
            if not isinstance(messages, list):
                raise ProblemError(400, "`batch` must be a list of messages",
                                   [FieldProblem(field="batch", message="must be a list")])
            if not all(isinstance(message, dict) for message in messages):
                # Not a message at all: the request is malformed (no SDK sends one), not one message.
                first = next(i for i, message in enumerate(messages) if not isinstance(message, dict))
                raise ProblemError(400, "Each member of `batch` must be a JSON object",
                                   [FieldProblem(field=f"batch[{first}]", message="must be a JSON object")])
            limit = get_settings().events_batch_max
            if len(messages) > limit:
                raise ProblemError(413, f"A batch holds at most {limit} messages; got {len(messages)}")
            return _answer(process(messages, None, sent_at, single=False))
        return _answer(process([body], kind, sent_at, single=True))

    view.__name__ = kind
    return view


def _sent_at(body: dict[str, Any]) -> datetime | None:
    if body.get("writeKey") is not None and not isinstance(body["writeKey"], str):
        raise ProblemError(400, "writeKey must be a string",
                           [FieldProblem(field="writeKey", message="must be a string")])
    try:
        return _instant(body.get("sentAt"), "sentAt")
    except Refused as refused:
        raise ProblemError(400, refused.reason, [FieldProblem(field="sentAt", message=refused.reason)]) from None


for _kind in ("batch", *KINDS):
    segment_bp.post(
        f"/{_kind}",
        summary=f"Segment {_kind}" + (" (many messages)" if _kind == "batch" else ""),
        description=_DESCRIPTION + ("Refused messages do not fail the batch: it answers 200 and lists them."
                                    if _kind == "batch" else "A message Pulse does not take answers 422."),
        # identify and alias link an anonymous id: 409 when it is another user's (services.api.identify).
        responses={200: SegmentAccepted, **({409: Problem} if _kind in ("identify", "alias") else {})},
        openapi_extensions=_request_body(_kind),
    )(_view(_kind))


# Segment's `code` of each error answer: fixed words (HTTP's phrases change between Python versions).
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_message",
               429: "too_many_requests", 500: "internal_error", 503: "unavailable"}


def error_code(status: int) -> str:
    return ERROR_CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


@segment_bp.after_request
def _segment_error(response):
    """Every /v1 error body also carries Segment's `code` and `message` (the SDKs read them)."""
    if response.status_code >= 400 and response.mimetype == PROBLEM_JSON:
        body = json.loads(response.get_data())
        body.setdefault("code", error_code(response.status_code))
        body.setdefault("message", body.get("detail") or body.get("title"))
        response.set_data(json.dumps(body))
    return response


def write_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Basic base64(<key>:)` header (the SDKs' way), else None."""
    import base64
    import binascii

    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        return None
    try:
        user = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user.partition(":")[0] or None


def credentials() -> str | None:
    """The Authorization the access check reads for a /v1 request: the Basic user name or the
    body's `writeKey` as a Bearer key (a Bearer header as it is)."""
    header = request.headers.get("Authorization")
    if (key := write_key(header)) is not None:
        return f"Bearer {key}"
    if header:
        return header
    body = request.get_json(force=True, silent=True)
    if isinstance(body, dict) and isinstance(body.get("writeKey"), str) and body["writeKey"]:
        return f"Bearer {body['writeKey']}"
    return None


class SegmentTransport:
    """What Segment's clients need before Flask sees a /v1 request:

    * analytics.js's short paths (/v1/t, /v1/b, ...) are the long ones; /v1/m (its telemetry)
      answers 200 and is dropped;
    * the browser's CORS preflight (analytics.js sends `Authorization` cross-origin) answers 204,
      and every /v1 answer allows SEGMENT_CORS_ORIGIN to read it;
    * a gzip body (rudder-sdk-python's default) is inflated, at most BATCH_MAX_BYTES of it (a few
      KiB of gzip can hold gigabytes of zeros); a body over that answers 413.
    """

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX + "/"):
            return self.app(environ, start_response)
        origin = get_settings().segment_cors_origin
        cors = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]

        def with_cors(status, headers, exc_info=None):
            return start_response(status, [*headers, *cors], exc_info)

        if environ.get("REQUEST_METHOD") == "OPTIONS":
            start_response("204 No Content", [
                *cors, ("Access-Control-Allow-Methods", "POST, OPTIONS"),
                ("Access-Control-Allow-Headers", "Authorization, Content-Type, Content-Encoding, X-Retry-Count"),
                ("Access-Control-Max-Age", "86400"), ("Content-Length", "0")])
            return [b""]
        short = path[len(PREFIX) + 1:]
        if short in SHORT_PATHS:
            environ["PATH_INFO"] = f"{PREFIX}/{SHORT_PATHS[short]}"
        elif path == METRICS_PATH:
            return _json(with_cors, 200, {"success": True})
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isdigit() and int(length) > BATCH_MAX_BYTES:
            return _json(with_cors, 413, _error(413, f"A request body holds at most {BATCH_MAX_BYTES} bytes"))
        encoding = (environ.get("HTTP_CONTENT_ENCODING") or "identity").strip().lower()
        if encoding == "gzip":
            stream = environ["wsgi.input"]
            compressed = stream.read(int(length)) if length.isdigit() else stream.read(BATCH_MAX_BYTES + 1)
            if len(compressed) > BATCH_MAX_BYTES:
                return _json(with_cors, 413, _error(413, f"A request body holds at most {BATCH_MAX_BYTES} bytes"))
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(compressed, BATCH_MAX_BYTES + 1)
            except zlib.error:
                return _json(with_cors, 400, _error(400, "The body is not valid gzip"))
            if len(body) > BATCH_MAX_BYTES or inflater.unconsumed_tail:
                return _json(with_cors, 413, _error(413, f"An inflated body holds at most {BATCH_MAX_BYTES} bytes"))
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_CONTENT_ENCODING", None)
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        elif encoding != "identity":
            return _json(with_cors, 415, _error(415, f"Content-Encoding {encoding!r}: only gzip is understood"))
        return self.app(environ, with_cors)


def _error(status: int, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail,
            "code": error_code(status), "message": detail}


def _json(start_response, status: int, body: dict[str, Any]):
    data = json.dumps(body).encode()
    start_response(f"{status} {HTTPStatus(status).phrase}", [
        ("Content-Type", PROBLEM_JSON if status >= 400 else "application/json"), ("Content-Length", str(len(data)))])
    return [data]
