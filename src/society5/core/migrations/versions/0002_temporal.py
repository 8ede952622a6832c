"""Temporal history of entities: series (entity × attribute × datasetId) and their attribute instances.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "broker_temporal_series",
        sa.Column("sid", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(512), nullable=False),
        sa.Column("attr", sa.String(512), nullable=False),
        sa.Column("dataset_id", sa.String(512), nullable=False, server_default=""),
    )
    op.create_index("ux_broker_temporal_series_key", "broker_temporal_series",
                    ["tenant", "entity_id", "attr", "dataset_id"], unique=True)
    op.create_table(
        "broker_temporal_instances",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("sid", sa.BigInteger, nullable=False),
        sa.Column("instance_id", sa.String(80), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("observed_at", sa.String(40), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("modified_at", sa.String(32), nullable=False),
        sa.Column("created_ts", sa.Float, nullable=False),
        sa.Column("modified_ts", sa.Float, nullable=False),
        sa.Column("value_num", sa.Float, nullable=True),
        sa.Column("instance", JSON, nullable=False),
    )
    # One series over a time range is one range scan; value_num rides along in the index so that
    # aggregations (GROUP BY period bucket) never touch the table rows.
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_broker_temporal_instances_time", "broker_temporal_instances",
                        ["sid", "deleted", "ts"], postgresql_include=["value_num"])
    else:
        op.create_index("ix_broker_temporal_instances_time", "broker_temporal_instances",
                        ["sid", "deleted", "ts", "value_num"])


def downgrade() -> None:
    op.drop_table("broker_temporal_instances")
    op.drop_table("broker_temporal_series")
