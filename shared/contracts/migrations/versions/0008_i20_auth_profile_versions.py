"""Profile cache versions in Postgres (shared.pipeline.profile_cache): one random token per user, replaced
by every change to the user's data, so a cached profile is served only while its token is the
current one here; Redis going back in time (a restore, a failover, a flush) cannot make an old
body current again, and an erased user (row gone with the user) is never served from the cache.

Revision ID: 0008_i20_auth
Revises: 0007
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_i20_auth"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_versions",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", postgresql.UUID(as_uuid=True), nullable=False,
                  server_default=sa.text("gen_random_uuid()")),
    )
    # No row for the existing users: a user without one has the version "initial" until their
    # next change (shared.pipeline.profile_cache). What Redis holds from before carries the old counters'
    # numbers as its tag, never "initial", and is simply computed again once.


def downgrade() -> None:
    op.drop_table("profile_versions")
