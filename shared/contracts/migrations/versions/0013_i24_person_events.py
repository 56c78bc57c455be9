"""The index the insight queries read (funnels, retention, lifecycle: `person_events`) and saved
cohorts (`cohorts`). `pulse summaries rebuild` fills `person_events` from MongoDB `events` for a
database that had events before this revision.

Revision ID: 0013_i24_person_events
Revises: 0012_i23_tracking_plan
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013_i24_person_events"
down_revision = "0012_i23_tracking_plan"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "person_events",
        sa.Column("person_id", sa.BigInteger(), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("properties", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )
    op.create_index("ix_person_events_type_at", "person_events", ["event_type", "at", "person_id"])
    op.create_index("ix_person_events_person_type_at", "person_events", ["person_id", "event_type", "at"])
    op.create_table(
        "cohorts",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("definition", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cohorts")
    op.drop_index("ix_person_events_person_type_at", table_name="person_events")
    op.drop_index("ix_person_events_type_at", table_name="person_events")
    op.drop_table("person_events")
