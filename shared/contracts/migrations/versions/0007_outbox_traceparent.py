"""The trace an outbox message was written in (shared.infra.tracing): its W3C traceparent.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Our SDK writes version-00 values (55 characters); later versions may append fields.
    op.add_column("outbox", sa.Column("traceparent", sa.String(128), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "traceparent")
