"""The OpenAPI document, completed to say everything the API can answer.

flask-openapi3 describes what each view declares; the errors that come from elsewhere (the JSON
checks before every view, the 503 of a store that is down, a 500) and their content type
(`application/problem+json`, RFC 9457) are added here for every operation, so a client or a
fuzzer that holds the API to its document finds nothing undeclared.
"""
from flask_openapi3 import OpenAPI

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

DESCRIPTIONS = {
    400: "Malformed JSON body",
    404: "No such resource",
    409: "Conflict with an existing resource",
    413: "Body too large (a batch over EVENTS_BATCH_MAX events, or a body over 16 MiB)",
    415: "The body is not application/json",
    422: "Invalid fields, each named in `errors`",
    500: "Internal error (logged with the request)",
    503: "A store Pulse needs is unavailable; retry after `Retry-After` seconds",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}


def _problem(status: int, existing: dict | None) -> dict:
    response = {
        "description": (existing or {}).get("description") or DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    if status == 503:
        response["headers"] = RETRY_AFTER
    return response


def _own_schema(response: dict) -> bool:
    """A view's declared answer with a schema of its own (the readiness report), not a Problem."""
    schemas = [media.get("schema", {}) for media in (response.get("content") or {}).values()]
    return any(schema.get("$ref") not in (None, PROBLEM_REF["$ref"]) for schema in schemas)


def complete(spec: dict, stateless_paths: frozenset[str] = frozenset({"/health", "/health/ready"})) -> dict:
    spec["components"] = {k: v for k, v in spec.get("components", {}).items() if v is not None}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
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
            for status in sorted(statuses):
                existing = responses.get(str(status))
                if status >= 400 and not (existing and _own_schema(existing)):
                    responses[str(status)] = _problem(status, existing)
            operation["responses"] = dict(sorted(responses.items()))
    return spec


class PulseOpenAPI(OpenAPI):
    def generate_spec_json(self):
        super().generate_spec_json()
        self.spec_json = complete(self.spec_json)
