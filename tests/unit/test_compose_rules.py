"""docker-compose.yml read as Compose v2 would read it, without a Docker engine: it validates against
the Compose Specification's JSON Schema (vendored in tests/data/compose-spec/, commit noted there),
and it keeps the rules that make `make up` (`up --build --detach --wait`) work on a fresh machine:

* every one-shot job is awaited with `service_completed_successfully` (else `up --wait` reports the
  job's container as exited and fails after the stack came up: docker/compose#9572);
* exactly one service builds each image; the others reuse it with `pull_policy: never` and depend on
  the builder (Compose ≥ 2.37 builds through Bake, one target per service: two services building the
  same tag fail on the containerd image store with `already exists`);
* every service that touches a store (by its environment: DATABASE_URL, BROKER_URL, MONGO_URI,
  REDIS_URL, ...) waits for it to be healthy, and for the migration when it touches Postgres;
* no image is unpinned (no `latest`, no missing tag); no service bypasses its image's entrypoint.
"""
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
SCHEMA = json.loads((ROOT / "tests/data/compose-spec/compose-spec.json").read_text())
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}")
# Environment variables that name a store the service then connects to.
STORE_VARIABLES = ("DATABASE_URL", "BROKER_URL", "MONGO_URI", "REDIS_URL", "RESULT_BACKEND", "FLOWER_BROKER_API")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$ -> $."""
    def value(match: re.Match) -> str:
        name, op, rest = match.groups()
        if name in env and (env[name] or op not in (":-", ":?")):
            return env[name]
        if op in (":?", "?"):
            raise AssertionError(f"compose would stop: {name}: {rest}")
        return VARIABLE.sub(value, rest or "")

    marker = "\0dollar\0"
    return VARIABLE.sub(value, text.replace("$$", marker)).replace(marker, "$")


def example_env() -> dict[str, str]:
    """What `make env` would write: .env.example with every empty secret filled in."""
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if re.fullmatch(r"[A-Z_]+=.*", line):
            name, value = line.split("=", 1)
            env[name] = value or f"{name.lower().replace('_', '-')}-secret"
    env["FLOWER_BASIC_AUTH"] = "pulse:flower-secret"
    return env


COMPOSE = yaml.safe_load(interpolate(COMPOSE_TEXT, example_env()))
SERVICES = COMPOSE["services"]


def depends_on(service: dict) -> dict[str, dict]:
    """The long form of depends_on (the short form means `service_started`)."""
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def all_dependencies(name: str) -> set[str]:
    found, todo = set(), [name]
    while todo:
        for dep in depends_on(SERVICES[todo.pop()]):
            if dep not in found:
                found.add(dep)
                todo.append(dep)
    return found


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def one_shot(service: dict) -> bool:
    """A job that exits when done: Compose must not restart it."""
    return str(service.get("restart", "no")) in ("no", "on-failure") or str(service.get("restart", "")).startswith(
        "on-failure")


def test_the_compose_file_is_valid_against_the_compose_specification():
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    # The file as written, before interpolation, too (what an editor's schema check sees).
    raw = yaml.safe_load(COMPOSE_TEXT)
    errors = list(validator.iter_errors(raw))
    assert not errors, [e.message for e in errors]


def test_the_schema_check_catches_what_compose_would_reject():
    """The vendored schema is the real one: a misspelt key, a wrong condition are errors."""
    validator = jsonschema.Draft7Validator(SCHEMA)
    broken = yaml.safe_load(interpolate(COMPOSE_TEXT, example_env()))
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_done"
    broken["services"]["worker"]["helthcheck"] = {"test": ["CMD", "true"]}
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("service_done" in m for m in messages) and any("helthcheck" in m for m in messages), messages


def test_make_up_waits_for_the_stack():
    """The rules below matter because `make up` (and the compose smoke test) use `up --wait`."""
    makefile = (ROOT / "Makefile").read_text()
    assert "$(COMPOSE) up --build --detach --wait" in makefile
    smoke = (ROOT / "tests/docker/test_compose_smoke.py").read_text()
    assert '"up", "--build", "--detach", "--wait"' in smoke


def test_every_one_shot_job_is_awaited_until_it_completed():
    jobs = [name for name, service in SERVICES.items() if one_shot(service)]
    assert {"migrate", "dev-key"} <= set(jobs)
    for job in jobs:
        waiting = [name for name, service in SERVICES.items()
                   if depends_on(service).get(job, {}).get("condition") == "service_completed_successfully"]
        assert waiting, f"`up --wait` would fail on the exited container of {job}: nothing waits for it to complete"
        # And never waited for as if it stayed up: that condition is never met by a job.
        for name, service in SERVICES.items():
            condition = depends_on(service).get(job, {}).get("condition")
            assert condition in (None, "service_completed_successfully"), (name, job, condition)
        assert "healthcheck" not in SERVICES[job], job


def test_every_long_running_service_has_a_healthcheck():
    """`up --wait` means 'healthy' only where there is a healthcheck; without one, just 'running'."""
    for name, service in SERVICES.items():
        if not one_shot(service):
            assert service.get("healthcheck", {}).get("test"), name
            assert not service["healthcheck"].get("disable"), name


def test_exactly_one_service_builds_each_image_and_the_others_reuse_it():
    images: dict[str, list[str]] = {}
    for name, service in SERVICES.items():
        images.setdefault(service.get("image", f"<{name}>"), []).append(name)
    built = {image: names for image, names in images.items() if any("build" in SERVICES[n] for n in names)}
    assert "pulse-app:local" in built
    for image, names in built.items():
        builders = [n for n in names if "build" in SERVICES[n]]
        assert len(builders) == 1, f"{image} is built by {builders}: one service must build it, the others reuse it"
        [builder] = builders
        assert SERVICES[builder].get("pull_policy") == "build", builder  # never looked for in a registry
        for name in names:
            if name == builder:
                continue
            assert SERVICES[name].get("pull_policy") == "never", f"{name} must not pull {image}: it is built here"
            # `docker compose up NAME` builds what NAME depends on: the image is there when it starts.
            assert builder in all_dependencies(name), f"{name} does not depend on {builder}, which builds {image}"


def test_every_service_that_touches_a_store_waits_for_it_to_be_healthy():
    touching = 0
    for name, service in SERVICES.items():
        env = environment(service)
        deps = depends_on(service)
        for variable in STORE_VARIABLES:
            if variable not in env:
                continue
            store = urlsplit(env[variable]).hostname
            assert store in SERVICES, (name, variable, store)
            assert SERVICES[store].get("healthcheck"), store
            assert deps.get(store, {}).get("condition") == "service_healthy", \
                f"{name} connects to {store} ({variable}) without waiting for it to be healthy"
            touching += 1
        if "DATABASE_URL" in env and name != "migrate":
            assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", \
                f"{name} opens Postgres sessions before the migration completed"
    assert touching >= 35  # seven long-running app services with five store URLs each, and the two jobs


def test_the_mailer_waits_for_postgres_and_the_migration():
    """Its task opens Postgres sessions and the failure recorder writes there."""
    deps = depends_on(SERVICES["mailer"])
    assert deps["postgres"] == {"condition": "service_healthy"}
    assert deps["migrate"] == {"condition": "service_completed_successfully"}
    assert deps["mailpit"] == {"condition": "service_healthy"}


def test_the_one_off_jobs_get_only_the_database_url():
    for job in ("migrate", "dev-key"):
        env = environment(SERVICES[job])
        assert "DATABASE_URL" in env, job
        assert not {"BROKER_URL", "MONGO_URI", "REDIS_URL", "RESULT_BACKEND"} & set(env), job


def image_tag(image: str) -> str | None:
    reference = image.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


@pytest.mark.parametrize("image,tag", [("redis", None), ("redis:latest", "latest"), ("host:5000/a/b", None),
                                       ("host:5000/a/b:1.2", "1.2"), ("a/b:2@sha256:ab", "2")])
def test_image_tag_reads_references(image, tag):
    assert image_tag(image) == tag


def test_no_image_is_unpinned():
    for name, service in SERVICES.items():
        image = service.get("image")
        assert image, f"{name} names no image"
        tag = image_tag(image)
        assert tag and tag != "latest", f"{name}: {image} is not pinned to a version"


def test_no_service_bypasses_its_image_entrypoint():
    """An image's entrypoint does its set-up (Redis and Postgres drop from root to their own user):
    a `command` that starts a shell, or an `entrypoint` override, skips it."""
    for name, service in SERVICES.items():
        assert "entrypoint" not in service, name
        assert "user" not in service, name
        command = service.get("command") or []
        command = command.split() if isinstance(command, str) else command
        assert not command or command[0] not in ("sh", "bash", "/bin/sh", "/bin/bash"), (name, command)
    # The Redis image's docker-entrypoint.sh switches to `redis` for a `redis-server` command.
    assert SERVICES["redis"]["command"][0] == "redis-server"


def test_every_variable_compose_reads_is_listed_in_the_env_example():
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    used = {match.group(1) for match in VARIABLE.finditer(COMPOSE_TEXT.replace("$$", ""))}
    assert used - listed == set(), f"compose reads these, .env.example does not mention them: {used - listed}"
    assert "JAEGER_UI_PORT" in listed
