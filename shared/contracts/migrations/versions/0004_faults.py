"""What each failing task raised, so a dead-lettered message can say why it died; which users
await rescoring, durably.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

RabbitMQ records where and when a message was dead-lettered (its `x-death` header) but not the
exception: the workers write it here on every retry and on the final failure
(`shared.infra.dead_letters`), keyed by the Celery task id the dead letter carries.

`rescore_pending` is written in the same transaction as the summaries: the Redis set that
coalesces rescoring is lost with a Redis restart and a drain's users with a killed analytics
worker; this table is not (shared.pipeline.rescore).
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_failures",
        sa.Column("task_id", sa.String(200), primary_key=True),
        sa.Column("task_name", sa.String(200), nullable=False),
        sa.Column("first_error", sa.Text(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_task_failures_last_failed_at", "task_failures", ["last_failed_at"])
    op.execute("CREATE SEQUENCE rescore_change_seq")
    op.create_table(
        "rescore_pending",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("change", sa.BigInteger(), server_default=sa.text("nextval('rescore_change_seq')"), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_rescore_pending_changed_at", "rescore_pending", ["changed_at"])


def downgrade() -> None:
    op.drop_index("ix_rescore_pending_changed_at", table_name="rescore_pending")
    op.drop_table("rescore_pending")
    op.execute("DROP SEQUENCE rescore_change_seq")
    op.drop_index("ix_task_failures_last_failed_at", table_name="task_failures")
    op.drop_table("task_failures")
