"""Liveness (`/health`) and readiness (`/health/ready`: every dependency, each reported)."""
import time
from collections.abc import Callable

from flask_openapi3 import APIBlueprint, Tag
from kombu import Connection
from sqlalchemy import text

from shared.db import get_engine
from shared.mongo import get_database
from shared.cache import get_redis
from shared.settings import get_settings

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


@health_bp.get("/health", summary="The API process is alive")
def health():
    return {"status": "ok"}


@health_bp.get("/health/ready", summary="Each dependency answers (503 when one does not)")
def ready():
    report = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
            report[name] = {"status": "ok", "ms": round((time.perf_counter() - started) * 1000, 1)}
        except Exception as exc:  # a readiness probe reports failures, it does not raise them
            report[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
    healthy = all(item["status"] == "ok" for item in report.values())
    return {"status": "ok" if healthy else "unavailable", "checks": report}, 200 if healthy else 503
