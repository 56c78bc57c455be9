"""The OpenAPI document, completed to say everything the API can answer.

flask-openapi3 describes what each view declares; the errors that come from elsewhere (the JSON
checks before every view, the 503 of a store that is down, a 500) and their content type
(`application/problem+json`, RFC 9457) are added here for every operation, so a client or a
fuzzer that holds the API to its document finds nothing undeclared.
"""
import re
from typing import Any

from flask_openapi3 import OpenAPI

from services.api import access
from services.api.problems import PROBLEM_JSON
from shared.contracts import personal

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

DESCRIPTIONS = {
    400: "Malformed JSON body",
    404: "No such resource",
    409: "Conflict with an existing resource",
    401: "No usable API key (none, unknown, revoked or expired): send `Authorization: Bearer <key>`",
    403: "The API key lacks the scope this operation needs",
    413: "Body too large (a batch over EVENTS_BATCH_MAX events, or a body over 16 MiB)",
    415: "The body is not application/json",
    422: "Invalid fields, each named in `errors`",
    429: "Over the rate limit (the key's, or its client's for unknown keys); retry after `Retry-After` seconds",
    500: "Internal error (logged with the request)",
    503: "A store Pulse needs is unavailable; retry after `Retry-After` seconds",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}
LIMIT_HEADERS = {
    "RateLimit-Limit": {"description": "Requests allowed per window", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Requests left in this window", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until the window resets", "schema": {"type": "integer"}},
}
REQUEST_ID = {"X-Request-ID": {"description": "The request's id (the client's, or made): in every log line about "
                               "it, and in the welcome e-mail of a signup", "schema": {"type": "string"}}}
CHALLENGE = {"WWW-Authenticate": {"description": "`Bearer realm=\"pulse\"`", "schema": {"type": "string"}}}


def _problem(status: int, existing: dict[str, Any] | None) -> dict[str, Any]:
    response = {
        "description": (existing or {}).get("description") or DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    if status == 503:
        response["headers"] = RETRY_AFTER
    if status == 429:
        response["headers"] = {**RETRY_AFTER, **LIMIT_HEADERS}
    if status == 401:
        response["headers"] = CHALLENGE
    return response


def _own_schema(response: dict[str, Any]) -> bool:
    """A view's declared answer with a schema of its own (the readiness report), not a Problem."""
    schemas = [media.get("schema", {}) for media in (response.get("content") or {}).values()]
    return any(schema.get("$ref") not in (None, PROBLEM_REF["$ref"]) for schema in schemas)


def complete(spec: dict[str, Any], policy: dict[tuple[str, str], tuple[str, bool]] | None = None,
             stateless_paths: frozenset[str] = frozenset({"/health", "/health/ready"}),
             also_required: dict[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """`policy`: {(path, method): (the scope services.api.access requires or "public", whether
    it is rate limited)}; `also_required`: {(path, method): a second scope it needs too}."""
    spec["components"] = {k: v for k, v in spec.get("components", {}).items() if v is not None}
    # Each personal field names its scope as an extension too (flask-openapi3 drops pydantic's
    # json_schema_extra, so it is put back from the description every personal field carries).
    for schema in spec["components"].get("schemas", {}).values():
        for prop in (schema.get("properties") or {}).values():
            if prop.get("description") == personal.FIELD_NOTE:
                prop["x-scope"] = personal.PERSONAL
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            scope, limited = (policy or {}).get((path, method), (access.PUBLIC, False))
            responses = {str(code): value for code, value in operation.get("responses", {}).items()}
            takes_input = bool(operation.get("parameters")) or "requestBody" in operation
            automatic = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if not takes_input and automatic.get("type") == "array":
                responses.pop("422")  # flask-openapi3 adds it to every operation, inputs or not
            statuses = {int(code) for code in responses} | {500}
            if path not in stateless_paths:
                statuses.add(503)  # every other operation reads or writes a store
            if takes_input:
                statuses.add(422)
            if "{" in path:
                statuses.add(404)
            if "requestBody" in operation:
                statuses |= {400, 413, 415}
            if scope != access.PUBLIC:
                operation["security"] = [{access.SECURITY_SCHEME: []}]
                also = (also_required or {}).get((path, method))
                needs = f"the `{scope}` and `{also}` scopes" if also else f"the `{scope}` scope"
                operation["description"] = (f"Needs an API key with {needs}. "
                                            + operation.get("description", "")).strip()
                # 429 also for a client over its limit of unknown keys (services.api.access).
                statuses |= {401, 403, 429}
            if limited:
                statuses.add(429)
            for status in sorted(statuses):
                existing = responses.get(str(status))
                if status >= 400 and not (existing and _own_schema(existing)):
                    responses[str(status)] = _problem(status, existing)
            for response in responses.values():
                response["headers"] = {**(response.get("headers") or {}), **REQUEST_ID}
            operation["responses"] = dict(sorted(responses.items()))
    return spec


def openapi_path(rule: str) -> str:
    """Werkzeug's `/api/users/<int:user_id>` as OpenAPI's `/api/users/{user_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


class PulseOpenAPI(OpenAPI):
    def register_api(self, api, **options):
        """flask-openapi3 replaces a path's operations with the blueprint's; two blueprints serve
        `/api/users/{user_id}` (users: GET, privacy: DELETE), so the operations are merged."""
        before = dict(self.paths)
        super().register_api(api, **options)
        for path, earlier in before.items():
            later = self.paths[path]
            if later is not earlier:
                self.paths[path] = earlier.model_copy(update={name: op for name, op in later if op is not None})

    def generate_spec_json(self) -> None:
        super().generate_spec_json()
        policy = {
            (openapi_path(rule.rule), method.lower()): (access.required_scope(rule.endpoint),
                                                         access.rate_limited(rule.endpoint))
            for rule in self.url_map.iter_rules()
            for method in rule.methods or ()
        }
        also_required = {
            (openapi_path(rule.rule), method.lower()): access.ALSO_REQUIRED[rule.endpoint]
            for rule in self.url_map.iter_rules() if rule.endpoint in access.ALSO_REQUIRED
            for method in rule.methods or ()
        }
        self.spec_json = complete(self.spec_json, policy, also_required=also_required)
