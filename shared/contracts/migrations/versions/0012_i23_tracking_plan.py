"""The tracking plan (custom event types' JSON Schemas) and the violations recorded against it
(services.api.tracking_plan).

Revision ID: 0012_i23_tracking_plan
Revises: 0011_i23_visitors
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012_i23_tracking_plan"
down_revision = "0011_i23_visitors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracking_plan",
        sa.Column("event_type", sa.String(64), primary_key=True),
        sa.Column("schema", postgresql.JSONB(), nullable=False),
        sa.Column("on_violation", sa.String(8), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.clock_timestamp(), nullable=False),
    )
    op.create_table(
        "tracking_violations",
        sa.Column("event_type", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(300), primary_key=True),
        sa.Column("refused", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("flagged", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("example", postgresql.JSONB(), nullable=True),
        sa.Column("example_user_id", sa.BigInteger(), nullable=True),
        sa.Column("example_anonymous_id", sa.String(200), nullable=True),
    )
    op.create_index("ix_tracking_violations_example_user_id", "tracking_violations", ["example_user_id"])
    op.create_index("ix_tracking_violations_example_anonymous_id", "tracking_violations", ["example_anonymous_id"])


def downgrade() -> None:
    op.drop_index("ix_tracking_violations_example_anonymous_id", table_name="tracking_violations")
    op.drop_index("ix_tracking_violations_example_user_id", table_name="tracking_violations")
    op.drop_table("tracking_violations")
    op.drop_table("tracking_plan")
