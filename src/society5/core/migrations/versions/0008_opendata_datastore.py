"""Open-data datastore: the registry of datastore tables (one real table ``ds_<hex>`` per resource).

The tables themselves are created at run time by ``society5.opendata.datastore`` (their columns are the
publisher's); this registry says which resource each belongs to and what its fields, keys and indexes are.

Revision ID: 0008
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "opendata_datastore_tables",
        sa.Column("resource_id", sa.String(100), primary_key=True),
        sa.Column("table_name", sa.String(63), nullable=False, unique=True),
        sa.Column("fields", JSON, nullable=False),
        sa.Column("primary_key", JSON, nullable=False),
        sa.Column("indexes", JSON, nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    # Drops only the registry: the ds_* tables it lists are dropped by datastore_delete.
    op.drop_table("opendata_datastore_tables")
