"""Per-customer purchase summaries, per-category totals, the ledger of applied event batches, and
each user's segment beside the profile score.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

The worker maintains these in the same transaction as the daily activity counters, exactly once
per event batch (`applied_batches`). An installation upgraded from 0002 fills them, and recounts
the activity counters, from MongoDB `events` with `pulse summaries rebuild`.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _user_id() -> sa.Column[int]:
    return sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    # Beside profile_score: the segment counts are a GROUP BY here instead of a scan of MongoDB profiles.
    op.add_column("users", sa.Column("segment", sa.String(16), nullable=True))
    op.create_table(
        "applied_batches",
        sa.Column("batch_id", sa.String(200), primary_key=True),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_applied_batches_applied_at", "applied_batches", ["applied_at"])
    op.create_table(
        "purchase_days",
        _user_id(),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("purchases", sa.Integer(), nullable=False),
        sa.Column("spent", sa.Numeric(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day"),
    )
    op.create_table(
        "customer_summaries",
        _user_id(),
        sa.Column("first_purchase_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_purchase_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("purchase_days", sa.Integer(), nullable=False),
        sa.Column("purchases", sa.Integer(), nullable=False),
        sa.Column("spent", sa.Numeric(), nullable=False),
        sa.Column("first_day_spent", sa.Numeric(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_index("ix_customer_summaries_last_day", "customer_summaries", ["last_day"])
    op.create_table(
        "customer_categories",
        _user_id(),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("purchases", sa.Integer(), nullable=False),
        sa.Column("spent", sa.Numeric(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "category"),
    )
    op.create_table(
        "category_sales",
        sa.Column("category", sa.String(100), primary_key=True),
        sa.Column("purchases", sa.BigInteger(), nullable=False),
        sa.Column("spent", sa.Numeric(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("category_sales")
    op.drop_table("customer_categories")
    op.drop_index("ix_customer_summaries_last_day", table_name="customer_summaries")
    op.drop_table("customer_summaries")
    op.drop_table("purchase_days")
    op.drop_index("ix_applied_batches_applied_at", table_name="applied_batches")
    op.drop_table("applied_batches")
    op.drop_column("users", "segment")
