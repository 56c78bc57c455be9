"""API keys; an index to find a person's outbox messages when they are erased.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Keys are stored as the SHA-256 of the whole key (shared.infra.api_keys): the key itself is shown once.
Published outbox rows keep their payloads (the user's name and e-mail for `user.created`), so
erasing a person deletes theirs; the index makes that a lookup, not a scan of every signup.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(16)), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_user_id", "outbox", [sa.text("(payload ->> 'user_id')")])


def downgrade() -> None:
    op.drop_index("ix_outbox_user_id", table_name="outbox")
    op.drop_table("api_keys")
