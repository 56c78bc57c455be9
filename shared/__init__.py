"""Pulse's contracts shared by every service: settings, database models, the Celery
topology, event schemas and the MongoDB/Redis access layers."""
