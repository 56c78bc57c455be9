"""The Flask app factory (flask-openapi3: the request models also produce /openapi), with
Celery bound to it for publishing (nickjj/docker-flask-example style)."""
from flask import Flask
from flask_openapi3 import Info

from services.api.access import SECURITY_SCHEME, init_access
from services.api.analytics import analytics_bp
from services.api.contract import PulseOpenAPI
from services.api.dashboard import dashboard_bp
from services.api.events import events_bp
from services.api.health import health_bp
from services.api.identify import identify_bp
from services.api.insights import insights_bp
from services.api.json_body import LimitedJSONProvider
from services.api.keys import keys_bp
from services.api.metrics import RequestMetrics, init_metrics
from services.api.pipeline import pipeline_bp
from services.api.privacy import privacy_bp
from services.api.problems import register_problem_handlers, validation_problem
from services.api.profile_hits import ProfileHits
from services.api.proxies import trusted_networks
from services.api.request_context import ENVIRON_KEY as REQUEST_ID_ENVIRON_KEY
from services.api.request_context import RequestIds
from services.api.segment import SegmentTransport, segment_bp
from services.api.tracking_plan import tracking_plan_bp
from services.api.users import users_bp
from shared.contracts.settings import get_settings
from shared.infra import tracing
from shared.infra.celery_app import create_celery_app
from shared.infra.logging import configure_logging

MAX_BODY_BYTES = 16 * 1024 * 1024


def init_celery(app: Flask) -> None:
    # The API only publishes (send_task by name); it never imports worker code.
    app.extensions["celery"] = create_celery_app("pulse-api")


def _tag_request(span, environ) -> None:
    if span.is_recording():
        # The id in every log line about the request (RequestIds runs outside Flask and sets it).
        span.set_attribute("pulse.request_id", environ.get(REQUEST_ID_ENVIRON_KEY, ""))


def init_tracing(app: Flask) -> None:
    """A server span per request that reaches Flask, named by its route. Cache hits answered by
    ProfileHits before Flask stay untraced: they are one Redis read in ~0.4 ms, the request the
    benchmarks hold to the HTTP floor, and RequestMetrics already counts and times them (their
    lone Redis span is dropped by the sampler, see shared.infra.tracing). Health checks and metric
    scrapes are left out: every few seconds each, they would bury the traces worth reading."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor.instrument_app(app, excluded_urls="/health,/metrics", request_hook=_tag_request)


def create_app() -> PulseOpenAPI:
    configure_logging()
    traced = tracing.configure_tracing("pulse-api")  # before anything connects (it instruments the clients)
    app = PulseOpenAPI(
        __name__,
        info=Info(
            title="Pulse API",
            version="0.1.0",
            description="Signups, activity events and user-analytics profiles. "
            "Errors are RFC 9457 `application/problem+json`. Interactive docs: /openapi/swagger",
        ),
        validation_error_status=422,
        validation_error_callback=validation_problem,
        doc_prefix="/openapi",
        security_schemes={SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "description":
                          "An API key: `Authorization: Bearer pulse_<id>_<secret>` (see docs/keys.md)"}},
    )
    # Every body any route reads as JSON goes through this parser and its depth limit.
    app.json = LimitedJSONProvider(app)
    app.json.sort_keys = False
    # A full batch of the largest events is a few MiB; anything far above is refused with a 413
    # before it is read into memory.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # A malformed TRUSTED_PROXIES entry stops the start, naming itself, instead of failing every request.
    trusted_networks(get_settings().trusted_proxies)
    metrics = get_settings().metrics_enabled
    if metrics:
        init_metrics(app)  # first: the route label is set before anything may answer early
    init_access(app)  # before the body checks: a caller without a key learns nothing else
    register_problem_handlers(app)
    init_celery(app)
    for blueprint in (health_bp, users_bp, privacy_bp, events_bp, identify_bp, analytics_bp, pipeline_bp, keys_bp,
                      tracking_plan_bp, segment_bp, insights_bp):
        app.register_api(blueprint)
    app.register_blueprint(dashboard_bp)  # HTML pages: not part of the API document
    if traced:
        init_tracing(app)  # wraps Flask's own wsgi_app: inside the middlewares below
    app.wsgi_app = ProfileHits(app.wsgi_app)  # cache hits skip Flask (see profile_hits)
    app.wsgi_app = SegmentTransport(app.wsgi_app)  # Segment's gzip, CORS and short paths (/v1 only)
    if metrics:
        app.wsgi_app = RequestMetrics(app.wsgi_app)  # counts the fast path too
    app.wsgi_app = RequestIds(app.wsgi_app)  # outermost: every answer and log line has the id
    return app
