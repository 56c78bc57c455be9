"""Infrastructure: connections to Postgres, MongoDB and Redis, logging, tracing, retries, the Celery app and what
records its failures, API keys. Reads the contracts; knows no pipeline or analytics."""
