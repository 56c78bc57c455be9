"""Jobs (fits and validations run in the background, shared.pipeline.jobs) and the rolling-holdout history
of the models (services.analytics.validation).

Revision ID: 0008_i21_api_jobs
Revises: 0008_i20_erasure
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_i21_api_jobs"
down_revision = "0008_i20_erasure"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False),
        sa.Column("result", postgresql.JSONB(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_field", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_jobs_kind_finished", "jobs", ["kind", "finished_at"])
    op.create_table(
        "model_holdouts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(32), nullable=False),
        sa.Column("calibration_end", sa.Date(), nullable=False),
        sa.Column("holdout_end", sa.Date(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("weeks", sa.Float(), nullable=False),
        sa.Column("actual_repeat_purchases", sa.BigInteger(), nullable=False),
        sa.Column("predicted_repeat_purchases", sa.Float(), nullable=False),
        sa.Column("mae", sa.Float(), nullable=False),
        sa.Column("rmse", sa.Float(), nullable=False),
        sa.Column("detail", postgresql.JSONB(), nullable=False),
    )
    op.create_index("ix_model_holdouts_checked_at", "model_holdouts", ["checked_at"])


def downgrade() -> None:
    op.drop_index("ix_model_holdouts_checked_at", table_name="model_holdouts")
    op.drop_table("model_holdouts")
    op.drop_index("ix_jobs_kind_finished", table_name="jobs")
    op.drop_table("jobs")
