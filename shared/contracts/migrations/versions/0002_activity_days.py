"""Daily activity counters per user (moved from a MongoDB collection to Postgres).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

An installation that counted activity in MongoDB `activity_daily` recounts it from the events
with `pulse summaries rebuild` (the old collection is then unused and can be dropped).
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "activity_days",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("activity_days")
