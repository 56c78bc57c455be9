"""The Alembic migrations create exactly the schema the models describe."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.contracts.tables import Base
from shared.infra.db import get_engine


def test_migrated_database_matches_the_models(services):
    # The session's test database was created by `alembic upgrade head` (tests.fixtures.services).
    with get_engine().connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
