"""Initial schema: countries (every ISO 3166 country), cities, addresses, users, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""
import pycountry
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The guide's figures (companion guide, topic 1, table `countries`); pycountry has no economics.
GUIDE_FIGURES = {"UA": (40_000_000, 4200), "PL": (38_000_000, 15600)}


def upgrade() -> None:
    countries = op.create_table(
        "countries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(2), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("population", sa.BigInteger()),
        sa.Column("gdp_per_capita", sa.Numeric(12, 2)),
    )
    op.create_table(
        "cities",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("country_id", sa.Integer(), sa.ForeignKey("countries.id"), nullable=False),
        sa.UniqueConstraint("name", "country_id", name="uq_cities_name_country"),
    )
    op.create_index("ix_cities_country_id", "cities", ["country_id"])
    op.create_table(
        "addresses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("street", sa.String(200), nullable=False),
        sa.Column("city_id", sa.Integer(), sa.ForeignKey("cities.id"), nullable=False),
    )
    op.create_index("ix_addresses_city_id", "addresses", ["city_id"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("profile_score", sa.Float(), nullable=False, server_default=sa.text("0")),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("address_id", sa.Integer(), sa.ForeignKey("addresses.id"), nullable=False),
    )
    op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True)
    op.create_index("ix_users_profile_score", "users", ["profile_score"])
    op.create_index("ix_users_address_id", "users", ["address_id"])
    op.create_table(
        "outbox",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("task_name", sa.String(200), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["created_at"],
        postgresql_where=sa.text("published_at IS NULL"),
    )

    rows = []
    for country in sorted(pycountry.countries, key=lambda c: c.alpha_2):
        population, gdp = GUIDE_FIGURES.get(country.alpha_2, (None, None))
        name = getattr(country, "common_name", None) or country.name
        rows.append(
            {
                "code": country.alpha_2,
                "name": name,
                "population": population,
                "gdp_per_capita": gdp,
            }
        )
    op.bulk_insert(countries, rows)


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("users")
    op.drop_table("addresses")
    op.drop_table("cities")
    op.drop_table("countries")
