"""The compose stack's Prometheus and Grafana configuration, checked without a Docker engine:
every metrics endpoint is scraped where compose serves it, Grafana finds its data source and
dashboard where compose mounts them, and every query names a metric docs/metrics.md documents."""
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
DATASOURCES = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text())
PROVIDERS = yaml.safe_load((ROOT / "docker/grafana/provisioning/dashboards/pulse.yml").read_text())
DASHBOARD = json.loads((ROOT / "docker/grafana/dashboards/pulse-pipeline.json").read_text())
METRICS_PAGE = (ROOT / "docs/metrics.md").read_text()
TRACES_PAGE = (ROOT / "docs/traces.md").read_text()


def mounts(service: str) -> dict[str, str]:
    """{container path: host path} of a service's bind mounts."""
    found = {}
    for volume in COMPOSE["services"][service].get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("./"):
            found[container] = host
    return found


def test_prometheus_scrapes_every_metrics_endpoint_where_compose_serves_it():
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    targets = {job: [t for c in jobs[job]["static_configs"] for t in c["targets"]] for job in jobs}
    assert targets == {"pulse-api": ["api:8000"], "celery-flower": ["flower:5555"], "rabbitmq": ["rabbitmq:15692"]}
    assert "--port 8000" in (ROOT / "docker/start").read_text() and "--port=5555" in (ROOT / "docker/start").read_text()
    assert "rabbitmq_prometheus" in (ROOT / "docker/rabbitmq/enabled_plugins").read_text()
    assert mounts("rabbitmq")["/etc/rabbitmq/enabled_plugins"] == "./docker/rabbitmq/enabled_plugins"
    assert mounts("prometheus")["/etc/prometheus/prometheus.yml"] == "./docker/prometheus/prometheus.yml"


def test_grafana_finds_its_data_source_and_dashboard():
    [source] = DATASOURCES["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    assert mounts("grafana")["/etc/grafana/provisioning"] == "./docker/grafana/provisioning"
    dashboards_path = PROVIDERS["providers"][0]["options"]["path"]
    assert mounts("grafana")[dashboards_path] == "./docker/grafana/dashboards"
    assert COMPOSE["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == \
        f"{dashboards_path}/pulse-pipeline.json"
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def test_every_dashboard_query_names_a_documented_metric():
    expressions = [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]
    names = {name for expr in expressions for name in re.findall(r"\b((?:pulse|flower|rabbitmq)_[a-z_]+)", expr)}
    assert names
    for name in names:
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert f"`{base}" in METRICS_PAGE or f"`{name}" in METRICS_PAGE or name.startswith("rabbitmq_"), name
    titles = {panel["title"] for panel in DASHBOARD["panels"]}
    assert {"Signups and events per second", "Queue depths (ready messages)", "Outbox lag",
            "Rescoring backlog and dead letters", "Profile cache hit ratio"} <= titles


TRACED = {"api": "pulse-api", "relay": "pulse-relay", "worker": "pulse-worker", "mailer": "pulse-mailer",
          "analytics": "pulse-analytics"}


def test_jaeger_receives_the_traces_of_every_pulse_process():
    jaeger = COMPOSE["services"]["jaeger"]
    image, tag = jaeger["image"].rsplit(":", 1)
    # Jaeger v2: its built-in configuration takes OTLP/HTTP on 4318 and serves the UI on 16686 with
    # in-memory storage, listening on JAEGER_LISTEN_HOST (0.0.0.0 in the image), so no config file.
    assert image == "jaegertracing/jaeger" and int(tag.split(".")[0]) == 2
    assert "command" not in jaeger and "volumes" not in jaeger
    # The UI on localhost only, like every other published port; the OTLP receivers stay inside.
    assert jaeger["ports"] == ["127.0.0.1:${JAEGER_UI_PORT:-16686}:16686"]
    # v2's health check (the healthcheckv2 extension), not v1's admin port 14269.
    assert "http://127.0.0.1:13133/status" in jaeger["healthcheck"]["test"]
    for name in TRACED:
        service = COMPOSE["services"][name]
        endpoint = service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        # OTLP/HTTP (the exporter Pulse ships) on Jaeger's 4318, by its compose service name.
        assert re.fullmatch(r"\$\{OTEL_EXPORTER_OTLP_ENDPOINT-http://jaeger:4318\}", endpoint), (name, endpoint)
        # Started, not healthy: tracing is optional, and the stack must come up without it.
        assert service["depends_on"]["jaeger"] == {"condition": "service_started"}, name
    # The setting compose passes is the one the code reads.
    from shared.contracts.settings import Settings

    assert "otel_exporter_otlp_endpoint" in Settings.model_fields


def test_every_traced_process_configures_tracing_under_its_service_name():
    """The names compose and docs/traces.md promise are the ones the processes give themselves."""
    sources = {
        "pulse-api": ROOT / "services/api/app.py",
        "pulse-relay": ROOT / "services/api/outbox_relay.py",
        "pulse-worker": ROOT / "services/worker/main.py",
        "pulse-mailer": ROOT / "services/worker/main.py",
        "pulse-analytics": ROOT / "services/analytics/main.py",
    }
    for service, path in sources.items():
        # The name inside the call that sets tracing up (the Celery app names are the same words).
        calls = re.findall(r"(?:configure_tracing|trace_worker_processes)\((.*)\)", path.read_text())
        assert any(f'"{service}"' in call for call in calls), (service, path, calls)
        assert f"`{service}`" in TRACES_PAGE, service
    start = (ROOT / "docker/start").read_text()
    assert '-n "mailer-${prefix}@%h"' in start  # the node name that makes the mailer pulse-mailer


def test_every_published_port_is_bound_to_localhost():
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
