"""History change log: on SQLite a write transaction records the history its changes make as one row of
this table (the changed instances, serialized in one piece), and the staging job expands it into history
rows later (see ``society5.broker.temporal_staging``). The table exists on PostgreSQL too, empty, so both
databases have the same schema.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "broker_temporal_log",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    # Expanding the log takes the broker's code: refuse rather than drop history nobody has read.
    waiting = op.get_bind().execute(sa.text("SELECT count(*) FROM broker_temporal_log")).scalar()
    if waiting:
        raise RuntimeError(
            f"broker_temporal_log holds {waiting} unexpanded history entries: start society5 once "
            "(any command that opens the platform expands them when staging is off: "
            "SOCIETY5_TEMPORAL_STAGING=false) before downgrading")
    op.drop_table("broker_temporal_log")
