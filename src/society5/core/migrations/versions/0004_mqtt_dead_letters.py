"""MQTT ingestion: dead letters (messages the bridge could not store, kept for people to look at).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "broker_mqtt_dead_letters",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
    )
    # The admin page lists the newest first, per tenant or all.
    op.create_index("ix_broker_mqtt_dead_letters_received", "broker_mqtt_dead_letters", ["received_at"])


def downgrade() -> None:
    op.drop_table("broker_mqtt_dead_letters")
