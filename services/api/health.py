"""Liveness (`/health`) and readiness (`/health/ready`: every dependency, each reported).

Readiness is public (load balancers and orchestrators probe it without a key), so each dependency
is checked at most once a second per API process, the result shared by every caller meanwhile
(services.api.shared_reads): a flood of probes costs the stores nothing more.
"""
import time
from collections.abc import Callable
from typing import Any, Literal

from flask_openapi3 import APIBlueprint, Tag
from kombu import Connection
from pydantic import BaseModel
from sqlalchemy import text

from services.api.shared_reads import SharedRead
from shared.contracts.settings import get_settings
from shared.infra.cache import get_redis
from shared.infra.db import get_engine
from shared.infra.mongo import get_database

health_bp = APIBlueprint("health", __name__, abp_tags=[Tag(name="health")])


def _postgres() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def _rabbitmq() -> None:
    with Connection(get_settings().broker_url, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _mongodb() -> None:
    get_database().command("ping")


def _redis() -> None:
    get_redis().ping()


CHECKS: dict[str, Callable[[], None]] = {
    "postgres": _postgres,
    "rabbitmq": _rabbitmq,
    "mongodb": _mongodb,
    "redis": _redis,
}


def _timed(check: Callable[[], None]) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            check()
            return {"status": "ok", "ms": round((time.perf_counter() - started) * 1000, 1)}
        except Exception as exc:  # a readiness probe reports failures, it does not raise them
            return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return run


SHARED_CHECKS: dict[str, SharedRead[dict[str, Any]]] = {
    name: SharedRead(_timed(check)) for name, check in CHECKS.items()}


# Without Postgres the API can do nothing useful; without any of the others it still answers in
# part (signups wait in the outbox, events in RabbitMQ, profiles skip the cache), so it stays in
# service and says "degraded" rather than being taken out of a load balancer.
REQUIRED = ("postgres",)


class Alive(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    status: Literal["ok", "error"]
    ms: float | None = None
    error: str | None = None


class Readiness(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, Check]


@health_bp.get("/health", summary="The API process is alive", responses={200: Alive})
def health():
    return {"status": "ok"}


@health_bp.get(
    "/health/ready",
    summary="Each dependency answers: ok; degraded (200) when one other than Postgres does not; "
    "unavailable (503) without Postgres",
    description="Each dependency is checked at most once a second per API process; callers meanwhile share "
    "that result, so a report is up to a second old.",
    responses={200: Readiness, 503: Readiness},
)
def ready():
    report = {name: dict(shared.get()) for name, shared in SHARED_CHECKS.items()}
    failing = [name for name, item in report.items() if item["status"] != "ok"]
    if any(name in REQUIRED for name in failing):
        return {"status": "unavailable", "checks": report}, 503
    return {"status": "degraded" if failing else "ok", "checks": report}, 200
