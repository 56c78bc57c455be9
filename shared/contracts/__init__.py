"""Contracts every service reads: settings, the queue topology, message and request schemas, the database tables and
their migrations, the shape of a user record. Imports nothing else of Pulse."""
