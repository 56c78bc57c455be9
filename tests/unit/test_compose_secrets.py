"""docker-compose.yml keeps its secrets out of the file, checked without a Docker engine: every
password comes from the environment with no working default, every store asks for one, every
published port is bound to localhost, and `make env` writes a .env that satisfies them all."""
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
VARIABLE = re.compile(r"\$\{([A-Z_]+)(:?[-?])?([^}]*)\}")


def example_secrets() -> list[str]:
    """Variables .env.example leaves empty: the secrets."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [line[:-1] for line in lines if re.fullmatch(r"[A-Z_]+=", line)]


def test_every_secret_is_required_and_has_no_default():
    secrets = example_secrets()
    assert set(secrets) == {"POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS", "MONGO_ROOT_PASSWORD", "REDIS_PASSWORD",
                            "FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD"}
    uses = [m.groups() for m in VARIABLE.finditer(COMPOSE_TEXT)]
    for name in secrets:
        mine = [(op, rest) for var, op, rest in uses if var == name]
        assert mine, f"{name} is never used"
        assert all(op == ":?" for op, _ in mine), f"{name} must be ${{{name}:?...}} everywhere: {mine}"
    # Every variable that must be set is one .env.example lists.
    required = {var for var, op, _ in uses if op == ":?"}
    assert required == set(secrets)
    assert "guest:" not in COMPOSE_TEXT  # no URL with the guest user


def test_every_store_asks_for_its_password():
    services = COMPOSE["services"]
    environment = COMPOSE["x-app-environment"]
    assert "${POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert "${RABBITMQ_DEFAULT_PASS:?" in services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"]
    assert "${MONGO_ROOT_PASSWORD:?" in services["mongo"]["environment"]["MONGO_INITDB_ROOT_PASSWORD"]
    assert "--requirepass" in " ".join(services["redis"]["command"])
    assert "${FLOWER_BASIC_AUTH:?" in services["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    # The app logs in to each of them.
    assert "${POSTGRES_PASSWORD:?" in environment["DATABASE_URL"]
    assert "${RABBITMQ_DEFAULT_PASS:?" in environment["BROKER_URL"]
    assert "${MONGO_ROOT_PASSWORD:?" in environment["MONGO_URI"] and "authSource=admin" in environment["MONGO_URI"]
    assert "${REDIS_PASSWORD:?" in environment["REDIS_URL"] and "${REDIS_PASSWORD:?" in environment["RESULT_BACKEND"]


def test_published_ports_are_bound_to_localhost():
    published = [(name, port) for name, service in COMPOSE["services"].items() for port in service.get("ports", [])]
    assert published, "the UIs and the API are published"
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), (name, port)


def test_the_development_key_job_writes_where_make_compose_key_reads():
    job = COMPOSE["services"]["dev-key"]
    assert job["command"] == ["pulse-start", "dev-key", "/keys/dev-api-key"] and job["volumes"] == ["api-keys:/keys"]
    assert "api-keys" in COMPOSE["volumes"]
    assert "cat /keys/dev-api-key" in (ROOT / "Makefile").read_text()
    assert "chown pulse:pulse /app/var /keys" in (ROOT / "Dockerfile").read_text()


def test_make_env_writes_a_random_value_for_every_secret(tmp_path):
    target = tmp_path / ".env"
    subprocess.run([str(ROOT / "scripts/make-env"), str(target)], check=True, capture_output=True)
    assert target.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in target.read_text().splitlines() if re.match(r"[A-Z_]+=", line))
    for name in example_secrets():
        assert re.fullmatch(r"[A-Za-z0-9_:-]{24,}", values[name]), name  # URL-safe, long
    again = tmp_path / "again"
    subprocess.run([str(ROOT / "scripts/make-env"), str(again)], check=True, capture_output=True)
    assert again.read_text() != target.read_text()  # random, not a shipped default
    before = target.read_text()
    subprocess.run([str(ROOT / "scripts/make-env"), str(target)], check=True, capture_output=True)
    assert target.read_text() == before  # an existing .env is kept
