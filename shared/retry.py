"""What counts as a transient failure, retried with exponential backoff and jitter."""
import smtplib

import redis
from kombu.exceptions import OperationalError as BrokerError
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout
from sqlalchemy.exc import OperationalError as DatabaseError

TRANSIENT_ERRORS = (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    redis.ConnectionError,
    redis.TimeoutError,
    smtplib.SMTPServerDisconnected,
    smtplib.SMTPConnectError,
    smtplib.SMTPDataError,
    ConnectionError,
    TimeoutError,
    BrokerError,
    DatabaseError,
)

# Shared by every task: 2, 4, 8, ... seconds (capped at 5 minutes), jittered, 10 tries;
# after that the task fails, is rejected, and RabbitMQ dead-letters it.
RETRY_POLICY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 10,
}
