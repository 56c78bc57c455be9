"""Erasure that cannot be lost (issue 20): the `erasures` ledger the reconciliation completes, the
erasure sweep's cursor, the people a task failure was about (so erasure finds their rows) and its
retry state (the retry backlog), and an index for pruning published outbox messages.

Revision ID: 0008_i20_erasure
Revises: 0008_i20_auth
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_i20_erasure"
down_revision = "0008_i20_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("user_id", sa.Integer(), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_erasures_erased_at", "erasures", ["erased_at"])
    op.create_table(
        "sweep_cursors",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("next_id", sa.BigInteger(), nullable=False),
        sa.Column("cycle_started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_cycle_completed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("task_failures", sa.Column("user_ids", postgresql.ARRAY(sa.Integer()), nullable=True))
    op.add_column("task_failures", sa.Column("retrying", sa.Boolean(), server_default=sa.text("false"),
                                             nullable=False))
    op.create_index("ix_task_failures_user_ids", "task_failures", ["user_ids"], postgresql_using="gin")
    op.create_index("ix_task_failures_retrying", "task_failures", ["task_name"], postgresql_where=sa.text("retrying"))
    op.create_index("ix_outbox_published", "outbox", ["published_at"],
                    postgresql_where=sa.text("published_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_outbox_published", table_name="outbox")
    op.drop_index("ix_task_failures_retrying", table_name="task_failures")
    op.drop_index("ix_task_failures_user_ids", table_name="task_failures")
    op.drop_column("task_failures", "retrying")
    op.drop_column("task_failures", "user_ids")
    op.drop_table("sweep_cursors")
    op.drop_index("ix_erasures_erased_at", table_name="erasures")
    op.drop_table("erasures")
