"""An index on users.created_at: retention by signup cohort reads the users who signed up in the
cohorts' periods, not every user.

Revision ID: 0014_i24_users_created_at
Revises: 0013_i24_person_events
Create Date: 2026-12-07
"""
from alembic import op

revision = "0014_i24_users_created_at"
down_revision = "0013_i24_person_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_users_created_at", "users", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_users_created_at", table_name="users")
