"""Anonymous visitors (issue 23): one row per `anonymous_id`, linked to a user by identify.

A visitor's events are stored under the negative of its id until it is linked (shared.contracts.
schemas, services.worker.storage); erasing the user erases its visitors (ON DELETE CASCADE).
An erasure's ledger row (`erasures`) keeps the ids of the user's visitors: the reconciliation finds
their events not merged yet by them, should the erase message never do its work.

Revision ID: 0011_i23_visitors
Revises: 0008_i21_api_jobs
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011_i23_visitors"
down_revision = "0008_i21_api_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "visitors",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("anonymous_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("anonymous_id", name="uq_visitors_anonymous_id"),
    )
    # A user's devices (export, erasure) without a scan.
    op.create_index("ix_visitors_user_id", "visitors", ["user_id"])
    op.add_column("erasures", sa.Column("visitor_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True))


def downgrade() -> None:
    op.drop_column("erasures", "visitor_ids")
    op.drop_index("ix_visitors_user_id", table_name="visitors")
    op.drop_table("visitors")
