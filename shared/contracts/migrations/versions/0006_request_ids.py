"""The request id an outbox message was written under (shared.infra.request_ids).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("request_id", sa.String(128), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "request_id")
