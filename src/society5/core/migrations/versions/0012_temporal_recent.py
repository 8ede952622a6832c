"""History staging: new history rows are appended to an unindexed table and moved into the indexed one in
bulk (SQLite; see ``society5.broker.temporal_tables.recent``). The table exists on PostgreSQL too, empty, so
both databases have the same schema.

Revision ID: 0012
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "broker_temporal_recent",
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


COLUMNS = ("sid, instance_id, deleted, ts, observed_at, created_at, modified_at, created_ts, modified_ts, "
           "value_num, instance")


def downgrade() -> None:
    # Rows still staged are history like any other: keep them.
    op.execute(f"INSERT INTO broker_temporal_instances ({COLUMNS}) "
               f"SELECT {COLUMNS} FROM broker_temporal_recent ORDER BY id")
    op.drop_table("broker_temporal_recent")
