"""Test-run isolation and the real services the suite runs against.

Every run gets its own Postgres database, RabbitMQ vhost, MongoDB-wire server (SecantusDB on a
free port, fresh storage) and database, Redis key prefix and SMTP catcher, so nothing left by an
earlier run can pass or fail a test. The settings are environment variables, set here before any
product module reads them; the worker subprocesses inherit them.
"""
import os
import uuid

from scripts.private_servers import free_port

RUN_ID = uuid.uuid4().hex[:10]


PG_SERVER = os.environ.get("PULSE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
RABBIT_HOST = os.environ.get("PULSE_TEST_RABBIT", "guest:guest@127.0.0.1:5672")
VHOST = f"pulse_test_{RUN_ID}"
MONGO_PORT = free_port()
SMTP_PORT = free_port()

TEST_ENV = {
    "DATABASE_URL": f"{PG_SERVER}/pulse_test_{RUN_ID}",
    "BROKER_URL": f"amqp://{RABBIT_HOST}/{VHOST}",
    "MONGO_URI": f"mongodb://127.0.0.1:{MONGO_PORT}/pulse_test_{RUN_ID}",
    "REDIS_URL": os.environ.get("PULSE_TEST_REDIS", "redis://127.0.0.1:6379/0"),
    "RESULT_BACKEND": os.environ.get("PULSE_TEST_REDIS", "redis://127.0.0.1:6379/0"),
    "CACHE_PREFIX": f"pulse-test-{RUN_ID}:",
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": str(SMTP_PORT),
    "QUEUE_PREFIX": "pulse",
    "LOG_LEVEL": "WARNING",
    "OUTBOX_POLL_INTERVAL": "0.2",
    "RESCORE_DELAY_SECONDS": "0.2",
}
os.environ.update(TEST_ENV)

pytest_plugins = ["tests.fixtures"]
