"""The request id of every API request (shared.infra.request_ids): taken from `X-Request-ID` or made,
bound to the log context while the request runs, and sent back on every answer, the cached-profile
fast path and early refusals included (this middleware is outside all of them)."""
from shared.infra import request_ids

ENVIRON_KEY = "pulse.request_id"


class RequestIds:
    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        request_id = request_ids.accept(environ.get("HTTP_X_REQUEST_ID"))
        environ[ENVIRON_KEY] = request_id
        request_ids.bind(request_id)

        def answering(status, headers, exc_info=None):
            if not any(name.lower() == "x-request-id" for name, _ in headers):
                headers.append((request_ids.HEADER, request_id))
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, answering)
        finally:
            request_ids.clear()
