"""Broker tables (created by the Alembic migrations in ``society5/core/migrations``)."""

import sqlalchemy as sa

from society5.core.db import JsonDoc, metadata

entities = sa.Table(
    "broker_entities",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(512), primary_key=True),
    sa.Column("doc", JsonDoc),
    sa.Column("public", sa.Boolean),
    sa.Column("created_at", sa.String(32)),
    sa.Column("modified_at", sa.String(32)),
)

entity_types = sa.Table(
    "broker_entity_types",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(512), primary_key=True),
    sa.Column("entity_id", sa.String(512), primary_key=True),
)

geo = sa.Table(
    "broker_geo",
    metadata,
    sa.Column("gid", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64)),
    sa.Column("entity_id", sa.String(512)),
    sa.Column("attr", sa.String(512)),
    sa.Column("minx", sa.Float),
    sa.Column("miny", sa.Float),
    sa.Column("maxx", sa.Float),
    sa.Column("maxy", sa.Float),
)

contexts = sa.Table(
    "broker_contexts",
    metadata,
    sa.Column("url", sa.String(2048), primary_key=True),
    sa.Column("kind", sa.String(16)),
    sa.Column("body", JsonDoc),
    sa.Column("created_at", sa.String(32)),
    sa.Column("last_used_at", sa.String(32)),
    sa.Column("uses", sa.Integer),
)
