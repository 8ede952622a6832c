"""NGSI-LD subscriptions of the broker, with their delivery status counters.

Revision ID: 0005
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "broker_subscriptions",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(512), primary_key=True),
        sa.Column("doc", JSON, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("modified_at", sa.String(32), nullable=False),
        sa.Column("next_at", sa.Float, nullable=True),
        sa.Column("times_sent", sa.Integer, nullable=False, server_default="0"),
        sa.Column("times_failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_notification", sa.String(32), nullable=True),
        sa.Column("last_success", sa.String(32), nullable=True),
        sa.Column("last_failure", sa.String(32), nullable=True),
        sa.Column("last_status", sa.String(16), nullable=True),
    )
    # The periodic job's only question: which timeInterval subscriptions are due?
    op.create_index("ix_broker_subscriptions_next_at", "broker_subscriptions", ["next_at"])


def downgrade() -> None:
    op.drop_table("broker_subscriptions")
