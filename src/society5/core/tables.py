"""Core tables (the schema itself is created by the Alembic migrations in ``migrations/``)."""

import sqlalchemy as sa

from society5.core.db import JsonDoc, metadata

tenants = sa.Table(
    "core_tenants",
    metadata,
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200)),
    sa.Column("name_en", sa.String(200)),
    sa.Column("lat", sa.Float),
    sa.Column("lon", sa.Float),
    sa.Column("created_at", sa.String(32)),
)

api_keys = sa.Table(
    "core_api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("secret_hash", sa.String(128)),
    sa.Column("role", sa.String(16)),
    sa.Column("tenant", sa.String(64)),
    sa.Column("entity_prefix", sa.String(512)),
    sa.Column("label", sa.String(200)),
    sa.Column("created_at", sa.String(32)),
    sa.Column("revoked_at", sa.String(32)),
)

users = sa.Table(
    "core_users",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(256)),
    sa.Column("role", sa.String(16)),
    sa.Column("tenant", sa.String(64)),
    sa.Column("display_name", sa.String(200)),
    sa.Column("created_at", sa.String(32)),
)

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The persistent outbox (core/outbox.py): messages committed with the change that caused them.
outbox = sa.Table(
    "core_outbox",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False, server_default=""),
    sa.Column("key", sa.String(512), nullable=False, server_default=""),
    sa.Column("payload", JsonDoc, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_at", sa.Float, nullable=False),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("claimed_until", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("done_at", sa.Float, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
)
