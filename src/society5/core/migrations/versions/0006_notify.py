"""Notify layer: recipients (per tenant) and the delivery log.

Revision ID: 0006
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "notify_recipients",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("channels", JSON, nullable=False),
        sa.Column("channel_order", JSON, nullable=False),
        sa.Column("quiet_start", sa.String(5), nullable=True),
        sa.Column("quiet_end", sa.String(5), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("webhook_secret", sa.String(256), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "notify_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("request", sa.String(36), nullable=False),
        sa.Column("recipient", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("route", JSON, nullable=False),
        sa.Column("parent", sa.String(36), nullable=True),
        sa.Column("template", sa.String(128), nullable=False),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("urgent", sa.Boolean, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body_text", sa.Text, nullable=False),
        sa.Column("body_html", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.Column("sent_at", sa.String(32), nullable=True),
    )
    # The log page and API list one tenant's newest deliveries, optionally of one recipient or status.
    op.create_index("ix_notify_deliveries_tenant_created", "notify_deliveries", ["tenant", "created_at"])
    op.create_index("ix_notify_deliveries_tenant_recipient", "notify_deliveries", ["tenant", "recipient"])
    op.create_index("ix_notify_deliveries_request", "notify_deliveries", ["request"])
    # The reconciliation job looks for deliveries not yet final.
    op.create_index("ix_notify_deliveries_status", "notify_deliveries", ["status"])


def downgrade() -> None:
    op.drop_table("notify_deliveries")
    op.drop_table("notify_recipients")
