"""Traces (OpenTelemetry): one trace from a request to its last effect, across every process.

Every process calls `configure_tracing(service_name)` once, before it opens any connection: the
API app factory (pulse-api), the outbox relay (pulse-relay) and each Celery pool process after
the fork (`worker_process_init`: pulse-worker, pulse-mailer, pulse-analytics). Beat is not traced:
what it sends starts a trace at the worker that runs it.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP over HTTP/protobuf to a collector such as Jaeger) or
`TRACES_DIR` (every process appends its finished spans as JSON lines to a file of its own: for
tests and for a look without a collector) is set. Off means no tracer provider and no
instrumentation at all: the OpenTelemetry API then hands out non-recording spans (the relay's
span per row is one of those), and an outbox row gets no traceparent.

The context travels the way the request id does (shared.infra.request_ids): the API writes the W3C
`traceparent` of the request into the outbox row (`outbox_write`), the relay publishes each
row inside a span that continues it (`continued_from`), Celery's instrumentation carries it in the
message headers to the worker, and from a worker task to every task it sends (the welcome e-mail,
the analytics rescoring drain). A coalesced rescoring drain belongs to the trace of the change that
scheduled it, as its request id does; users changed while it was already scheduled are rescored in
that drain, so their traces end at the worker's `rescore` mark (see docs/traces.md).
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from opentelemetry import propagate, trace
from opentelemetry.context import Context

if TYPE_CHECKING:  # the SDK is imported lazily (see configure_tracing); these are for annotations
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Link
    from opentelemetry.util.types import Attributes
    from sqlalchemy import Engine

from shared.contracts.settings import get_settings
from shared.infra.logging import get_logger

log = get_logger("pulse.tracing")

_lock = threading.Lock()
_provider: TracerProvider | None = None  # the SDK TracerProvider of this process, once configured


def configure_tracing(service_name: str) -> bool:
    """Set up this process's tracer provider and instrumentations, when a destination is
    configured. Idempotent; returns whether tracing is on."""
    global _provider
    settings = get_settings()
    if not settings.otel_exporter_otlp_endpoint and not settings.traces_dir:
        return False
    with _lock:
        if _provider is not None:
            return True
        # Imported here: a process with tracing off never loads the SDK or the instrumentations.
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "service.namespace": "pulse",
                                      "process.pid": os.getpid()}),
            sampler=_sampler(),
        )
        if settings.otel_exporter_otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # The variable names the collector's base URL, as in every OpenTelemetry SDK; the
            # traces path is added as the SDK would (we pass the URL because it comes from our
            # settings, which also read .env). Batched: a request must not wait for the collector.
            endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        if settings.traces_dir:
            # Synchronous: a span is on disk when it ends, so a test polling the files never waits
            # for a batch flush and a SIGKILLed process leaves every span it finished.
            # A SpanExporter by its methods, not by its base class (see JsonLinesExporter).
            exporter = cast("SpanExporter", JsonLinesExporter(settings.traces_dir, service_name))
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _instrument(provider)
        _provider = provider
    log.info("tracing_configured", service=service_name, otlp=settings.otel_exporter_otlp_endpoint,
             traces_dir=settings.traces_dir)
    return True


def shutdown() -> None:
    """Flush what is batched and stop exporting."""
    if _provider is not None:
        _provider.shutdown()


def _sampler() -> Sampler:
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult

    class NoLoneClientSpans(Sampler):
        """A root span of kind CLIENT is a database or Redis call that no request or task is
        around: the relay polling an empty outbox twice a second, a cached profile answered
        before Flask (one Redis read), the API refreshing its key cache. Each would be a trace of
        one span; they are dropped. Everything under a request, a task or a relay publish is kept
        (ParentBased follows the parent's decision)."""

        def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                          kind: trace.SpanKind | None = None, attributes: Attributes = None,
                          links: Sequence[Link] | None = None,
                          trace_state: trace.TraceState | None = None) -> SamplingResult:
            if kind == trace.SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

        def get_description(self) -> str:
            return "NoLoneClientSpans"

    return ParentBased(root=NoLoneClientSpans())


def _instrument(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    _celery_instrumentor().instrument(tracer_provider=provider)
    # pymongo listeners apply to clients created afterwards (shared.infra.mongo: lazily, per process).
    PymongoInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)


def instrument_engine(engine: Engine) -> None:
    """Statement spans for a SQLAlchemy engine (shared.infra.db calls it for each engine it creates).

    Not SQLAlchemyInstrumentor().instrument(), for two reasons found on SQLAlchemy 2.1: it
    declares support for < 2.1 only (skip_dep_check would pass that), and it then wraps
    `sqlalchemy.ext.asyncio.create_async_engine`, whose import fails without greenlet, which 2.1
    no longer installs. And its way of reaching engines, wrapping `sqlalchemy.create_engine`,
    misses ours: shared.infra.db holds the function from its import, before any process configures
    tracing. The EngineTracer it would attach is attached here directly; its event hooks
    (before/after_cursor_execute, handle_error, pool checkout/checkin) are the same in 2.1, and
    tests/integration/test_tracing.py checks that a query on 2.1 gives its span."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__
    from opentelemetry.metrics import get_meter

    connections = get_meter("opentelemetry.instrumentation.sqlalchemy", __version__).create_up_down_counter(
        "db.client.connections.usage", unit="connections")
    EngineTracer(trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__, _provider), engine,
                 connections)


def _celery_instrumentor() -> CeleryInstrumentor:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    # Pulse sends almost every task by name to a task that lives in another service (the relay
    # sends `user.created`, the API `store_events`, the worker the analytics drain), so the
    # sending process's registry does not know it. The instrumentation then keeps no handle on
    # its publish span: the span still wraps the header injection (the context travels), and it
    # ends as soon as its context manager is released, at the end of before_task_publish, so it
    # is exported with a near-zero duration and the thread's current span is restored.
    # tests/integration/test_tracing.py checks both; the relay's own span covers the publish
    # with its confirm.
    return CeleryInstrumentor()


def trace_worker_processes(service_name: str | Callable[[str], str]) -> None:
    """Trace the tasks of a Celery worker: in each pool process, after the fork, where the tasks
    run. A provider made before the fork would hand every child a copy of the parent's exporter
    (its HTTP connections, its open span file) and rely on the SDK restarting its batch thread
    in each child; made after, each child owns its own, and the main process, which runs no
    task, traces nothing. At the child's exit its batch is flushed (`worker_process_shutdown`:
    billiard ends a pool process with os._exit, so atexit handlers never run). `service_name`
    is a name or a function of the worker's node name (-n), called in the main process."""
    from celery import signals

    names: dict[str, str] = {}

    @signals.worker_init.connect(weak=False)
    def _name(sender: object = None, **_kwargs: Any) -> None:
        hostname = getattr(sender, "hostname", "") or ""
        names["service"] = service_name(hostname) if callable(service_name) else service_name

    @signals.worker_process_init.connect(weak=False)
    def _configure(**_kwargs: Any) -> None:
        configure_tracing(names.get("service") or (service_name if isinstance(service_name, str) else "pulse-worker"))

    @signals.worker_process_shutdown.connect(weak=False)
    def _flush(**_kwargs: Any) -> None:
        shutdown()


# ----------------------------------------------------------------------------- the outbox hop

def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, for a message that leaves without Celery (an
    outbox row); None when nothing is traced."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def outbox_write(task_name: str) -> Iterator[str | None]:
    """Around writing an outbox row: a PRODUCER span under the request whose context the row
    keeps. Yields the traceparent to store (None when tracing is off)."""
    if _provider is None:
        yield None
        return
    with trace.get_tracer("pulse.outbox").start_as_current_span(
        f"outbox write {task_name}", kind=trace.SpanKind.PRODUCER,
        attributes={"messaging.system": "postgres-outbox", "messaging.destination.name": task_name},
    ):
        yield current_traceparent()


def continued_from(traceparent: str | None) -> Context:
    """The context a stored traceparent names (an empty context, so a new trace, without one)."""
    return propagate.extract({"traceparent": traceparent} if traceparent else {}, context=Context())


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


# ----------------------------------------------------------------------------- JSON-lines exporter

class JsonLinesExporter:
    """Appends finished spans to `<dir>/<service>-<pid>.jsonl`, one JSON object a line.

    One file per process: the pool processes of a Celery worker and the API's granian workers
    write at once, and whole lines from one writer never interleave. A span exporter in the SDK's
    sense (export/shutdown/force_flush), without the SDK's base class so this module imports it
    lazily."""

    def __init__(self, directory: str, service_name: str) -> None:
        self._directory = Path(directory)
        self._service = service_name
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._pid: int | None = None

    def _open(self) -> IO[str]:
        # Reopened after a fork: a child must not write into its parent's file.
        if self._file is None or self._pid != os.getpid():
            self._directory.mkdir(parents=True, exist_ok=True)
            self._pid = os.getpid()
            self._file = open(self._directory / f"{self._service}-{self._pid}.jsonl", "a", encoding="utf-8")
        return self._file

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [json.dumps(span_record(span, self._service), default=str) + "\n" for span in spans]
        with self._lock:
            handle = self._open()
            handle.write("".join(lines))
            handle.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_record(span: ReadableSpan, service: str) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None  # the SDK gives every span its context when it starts
    parent = span.parent
    return {
        "service": service,
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [{"trace_id": format(link.context.trace_id, "032x"), "span_id": format(link.context.span_id, "016x")}
                  for link in span.links],
    }
