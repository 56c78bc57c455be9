"""shared.infra.tracing in one process against the run's real Postgres, Redis and MongoDB-wire server:
the instrumentations it loads produce their spans (SQLAlchemy 2.1 included, which the
SQLAlchemy instrumentation does not declare support for), a Celery message sent by name to a task
this process does not know ends its publish span and leaves the current span as it was, lone client calls start no
trace, and with nothing
configured nothing is traced at all.

Each check runs in a subprocess: a tracer provider is once per process, and the suite's own
process must stay untraced."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fixtures import ROOT

PROBE = textwrap.dedent("""
    import json, sys
    from celery import Celery
    from opentelemetry import trace
    from sqlalchemy import text

    from shared.infra import tracing
    from shared.infra.cache import get_redis
    from shared.infra.db import session_scope
    from shared.infra.mongo import get_database

    on = tracing.configure_tracing("pulse-probe")
    from celery import signals
    sent_headers = {}

    @signals.before_task_publish.connect(weak=False)  # after the instrumentation's receiver
    def keep(headers=None, **_kwargs):
        sent_headers.update(headers or {})

    with session_scope() as session:
        session.execute(text("SELECT 1"))  # no span around it: must start no trace
    # A broker in memory: the message goes nowhere, the publish signals fire as with RabbitMQ.
    app = Celery("probe", broker="memory://", set_as_current=True)
    with trace.get_tracer("probe").start_as_current_span("probe root") as root:
        with session_scope() as session:
            session.execute(text("SELECT 2"))
        get_redis().ping()
        get_database().command("ping")
        result = app.send_task("pulse.elsewhere.by_name", kwargs={"x": 1})
        after = trace.get_current_span().get_span_context().span_id
    print(json.dumps({"on": on, "root": format(root.get_span_context().span_id, "016x"),
                      "current_after_publish_is_root": after == root.get_span_context().span_id,
                      "traceparent": tracing.current_traceparent(),
                      "sent_traceparent": sent_headers.get("traceparent")}))
""")


def run_probe(tmp_path: Path, **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("TRACES_DIR", "OTEL_EXPORTER_OTLP_ENDPOINT")}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**environ, **env}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def spans_in(directory: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()]


def test_each_instrumentation_writes_its_spans_under_the_current_one(services, tmp_path):
    traces = tmp_path / "traces"
    result = run_probe(tmp_path, TRACES_DIR=str(traces))
    assert result["on"] is True
    spans = spans_in(traces)
    [root] = [s for s in spans if s["name"] == "probe root"]
    assert root["span_id"] == result["root"] and root["service"] == "pulse-probe"
    children = [s for s in spans if s["parent_span_id"] == root["span_id"]]
    assert all(s["trace_id"] == root["trace_id"] for s in children)

    def system(span):
        return span["attributes"].get("db.system") or span["attributes"].get("db.system.name")

    assert {system(s) for s in children} >= {"postgresql", "redis",
                                             "mongodb"}, [(s["name"], system(s)) for s in children]
    sql = [s for s in children if system(s) == "postgresql"]
    assert any("SELECT 2" in str(s["attributes"].get("db.statement", s["attributes"].get("db.query.text", ""))) or
               s["name"].startswith("SELECT") for s in sql), sql
    # The lone SELECT 1 before the root started no trace of its own.
    assert not [s for s in spans if s["parent_span_id"] is None and s["name"] != "probe root"], \
        [s["name"] for s in spans if s["parent_span_id"] is None]


def test_a_task_sent_by_name_closes_its_publish_span_and_carries_its_context(services, tmp_path):
    traces = tmp_path / "traces"
    result = run_probe(tmp_path, TRACES_DIR=str(traces))
    spans = spans_in(traces)
    publishes = [s for s in spans if s["name"] == "apply_async/pulse.elsewhere.by_name"]
    # The task is not in this process's registry: the span must still end (or it is never exported).
    assert len(publishes) == 1, [s["name"] for s in spans]
    [publish] = publishes
    assert publish["kind"] == "PRODUCER" and publish["parent_span_id"] == result["root"]
    # The message carries the publish span as the consumer's parent.
    assert result["sent_traceparent"].startswith(f"00-{publish['trace_id']}-{publish['span_id']}-")
    # ... and it does not stay the thread's current span once the message is sent.
    assert result["current_after_publish_is_root"] is True


def test_nothing_is_traced_unless_a_destination_is_set(services, tmp_path):
    result = run_probe(tmp_path)
    assert result == {"on": False, "root": "0000000000000000", "current_after_publish_is_root": True,
                      "traceparent": None, "sent_traceparent": None}
    assert not list(tmp_path.rglob("*.jsonl"))
