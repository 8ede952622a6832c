"""Open-data publishers: datasets whose CSV/GeoJSON resources are regenerated from broker entities.

One row per binding (entity type, filter, shape, schedule) and the two resources it keeps up to date; the
binding itself is a JSON document (``spec``) validated by ``society5.opendata.publish_spec``.

Revision ID: 0009
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "opendata_publishers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("package_id", sa.String(36), nullable=False, index=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("csv_resource_id", sa.String(36), nullable=False),
        sa.Column("geojson_resource_id", sa.String(36), nullable=False),
        sa.Column("every_s", sa.Integer, nullable=False),
        sa.Column("next_run_at", sa.String(32), nullable=False, index=True),
        sa.Column("last_run_at", sa.String(32), nullable=True),
        sa.Column("last_rows", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    # The resources a publisher kept up to date stay in the catalog as they last were.
    op.drop_table("opendata_publishers")
