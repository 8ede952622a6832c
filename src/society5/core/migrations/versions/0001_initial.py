"""Initial schema: tenants, API keys, staff users, broker entities with type and spatial indexes.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "core_tenants",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("name_en", sa.String(200), nullable=False, server_default=""),
        sa.Column("lat", sa.Float, nullable=True),
        sa.Column("lon", sa.Float, nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "core_api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("entity_prefix", sa.String(512), nullable=True),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32), nullable=True),
    )
    op.create_table(
        "core_users",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "broker_entities",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(512), primary_key=True),
        sa.Column("doc", JSON, nullable=False),
        sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("modified_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_broker_entities_modified", "broker_entities", ["tenant", "modified_at"])
    op.create_table(
        "broker_entity_types",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(512), primary_key=True),
        sa.Column("entity_id", sa.String(512), primary_key=True),
    )
    op.create_index("ix_broker_entity_types_entity", "broker_entity_types", ["tenant", "entity_id"])
    op.create_table(
        "broker_geo",
        sa.Column("gid", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(512), nullable=False),
        sa.Column("attr", sa.String(512), nullable=False),
        sa.Column("minx", sa.Float, nullable=False),
        sa.Column("miny", sa.Float, nullable=False),
        sa.Column("maxx", sa.Float, nullable=False),
        sa.Column("maxy", sa.Float, nullable=False),
    )
    op.create_index("ix_broker_geo_entity", "broker_geo", ["tenant", "entity_id"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE broker_geo_rtree USING rtree(gid, minx, maxx, miny, maxy)")
    else:
        # No PostGIS needed: the built-in box type has a GiST index that answers bbox overlap (&&).
        op.execute(
            "CREATE INDEX ix_broker_geo_box ON broker_geo USING gist "
            "(box(point(minx, miny), point(maxx, maxy)))"
        )
    op.create_table(
        "broker_contexts",
        sa.Column("url", sa.String(2048), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("last_used_at", sa.String(32), nullable=True),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS broker_geo_rtree")
    for name in (
        "broker_contexts",
        "broker_geo",
        "broker_entity_types",
        "broker_entities",
        "core_users",
        "core_api_keys",
        "core_tenants",
    ):
        op.drop_table(name)
