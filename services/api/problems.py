"""RFC 9457 problem responses: every error the API gives is `application/problem+json`."""
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, request
from pydantic import BaseModel, Field, ValidationError
from werkzeug.exceptions import BadRequest, HTTPException

from shared.contracts.schemas import UNION_TAGS
from shared.infra import request_ids
from shared.infra.logging import get_logger
from shared.infra.retry import TRANSIENT_ERRORS

log = get_logger(__name__)
PROBLEM_JSON = "application/problem+json"
# What a client should wait before retrying while a store is down: long enough for a restart,
# short enough that a load balancer's retry does not give up.
RETRY_AFTER_SECONDS = 5


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
    request_id: str | None = Field(None, description="The request's X-Request-ID: the one id in every log line "
                                   "about it")


class ProblemError(Exception):
    """Raised by handlers to answer with a problem document."""

    def __init__(self, status: int, detail: str, errors: list[FieldProblem] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def problem_response(status: int, detail: str | None = None, errors: list[FieldProblem] | None = None) -> Response:
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, errors=errors,
                   request_id=request_ids.current())
    return Response(
        body.model_dump_json(exclude_none=True), status=status, mimetype=PROBLEM_JSON
    )


# What pydantic appends to a location for each member of a union that failed: not a field.
UNION_MEMBER_TAGS = {"int", "float", "str", "bool", "none"}


def field_path(loc: tuple[Any, ...]) -> str:
    """('events', 3, '(user_purchase)', 'metadata', 'price') → 'events[3].metadata.price'."""
    path = ""
    if loc and isinstance(loc[-1], str) and ("-" in loc[-1] or "[" in loc[-1] or loc[-1] in UNION_MEMBER_TAGS):
        loc = loc[:-1]  # e.g. ('metadata', 'n', 'constrained-int'): the field is metadata.n
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in UNION_TAGS:  # the discriminated union's tag, not a field of the request
            continue
        else:
            # A key the client sent may hold a lone surrogate (a JSON "\udfff" escape), which no UTF-8 answer can carry.
            part = str(part).encode("utf-8", "backslashreplace").decode()
            path += f".{part}" if path else part
    return path or "body"


def error_field(error: Mapping[str, Any]) -> str:  # pydantic's ErrorDetails, or a dict like it
    loc = tuple(error["loc"])
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc += ("event_type",)  # pydantic reports a bad discriminator at the union, not the field
    return field_path(loc)


def validation_problem(error: ValidationError) -> Response:
    errors = [
        FieldProblem(field=error_field(e), message=e["msg"]) for e in error.errors(include_url=False)
    ]
    fields = ", ".join(dict.fromkeys(e.field for e in errors))
    return problem_response(422, f"Invalid fields: {fields}", errors)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception and those it was raised from or while handling, nearest first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def register_problem_handlers(app: Flask) -> None:
    @app.before_request
    def _reject_malformed_json():
        # flask-openapi3 reads bodies with get_json(silent=True): without this check a syntax
        # error would surface as a vague 422 instead of saying the JSON itself is broken.
        # The dashboard's HTML forms (login, logout) post form data, not JSON. Segment's /v1 API
        # reads JSON whatever the Content-Type: analytics.js sends it as text/plain.
        if request.method in ("POST", "PUT", "PATCH") and request.content_length != 0 \
                and request.blueprint != "dashboard":
            any_type = request.blueprint == "segment"
            if not (request.is_json or any_type):
                return problem_response(415, "Send the body as application/json")
            limit = app.config.get("MAX_CONTENT_LENGTH")
            if request.content_length is None and limit and len(request.get_data(cache=True)) >= limit:
                # A chunked body (no Content-Length) is cut at the limit by werkzeug without an
                # error; what was cut off must not go unnoticed (or parse as a shorter document).
                return problem_response(413, f"The body is larger than {limit} bytes")
            try:
                request.get_json(force=any_type)  # parsed once; Flask caches it for the view's validation
            except BadRequest as exc:
                # Flask hides the parser's reason outside debug mode; it is about the client's own
                # bytes (a position, "nested more than 32 levels deep"), so it is said.
                reason = next((str(e) for e in _chain(exc) if isinstance(e, ValueError)), exc.description)
                return problem_response(400, f"Malformed JSON body: {reason}",
                                        [FieldProblem(field="body", message=reason)])
        return None

    @app.errorhandler(ProblemError)
    def _problem(exc: ProblemError):
        response = problem_response(exc.status, exc.detail, exc.errors)
        response.headers.update(exc.headers)
        if exc.status == 503 and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if exc.response is not None and exc.response.mimetype == PROBLEM_JSON:
            return exc.response  # already a problem (flask-openapi3's abort with our callback)
        response = problem_response(exc.code or 500, exc.description)
        # werkzeug's own headers, the 405's Allow among them (RFC 9110 requires it there).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    def _store_down(exc: Exception):
        # Postgres, MongoDB, Redis or RabbitMQ unreachable: the request did nothing (each write is
        # one transaction or one publish), so the client may safely send it again.
        log.warning("store_unavailable", path=request.path, error=f"{type(exc).__name__}: {exc}"[:300])
        return _problem(ProblemError(503, f"A store Pulse needs is unavailable ({type(exc).__name__}); retry later"))

    for error in TRANSIENT_ERRORS:
        app.register_error_handler(error, _store_down)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled_error", path=request.path)
        return problem_response(500, "Internal error; it has been logged")
