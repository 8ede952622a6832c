"""The bears service's private tables: reporters, images, area subscriptions, alert log, drone dispatches.

Revision ID: 0011
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "bears_reports",
        sa.Column("sighting_id", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("contact", sa.String(200)),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_bears_reports_client", "bears_reports", ["client", "created_at"])
    op.create_table(
        "bears_images",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("camera_id", sa.String(200)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("taken_at", sa.String(32), nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
        sa.Column("label", sa.String(16)),
        sa.Column("confidence", sa.Float),
        sa.Column("bear_score", sa.Float),
        sa.Column("box", JSON),
        sa.Column("event_id", sa.String(36)),
        sa.Column("sighting_id", sa.String(200)),
        sa.Column("path", sa.String(300)),
        sa.Column("thumb_path", sa.String(300)),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("delete_after", sa.String(32)),
        sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("lat", sa.Float),
        sa.Column("lon", sa.Float),
    )
    op.create_index("ix_bears_images_event", "bears_images", ["event_id"])
    op.create_index("ix_bears_images_sighting", "bears_images", ["tenant", "sighting_id"])
    op.create_index("ix_bears_images_camera", "bears_images", ["tenant", "camera_id", "taken_at"])
    op.create_index("ix_bears_images_delete", "bears_images", ["delete_after"])
    op.create_index("ix_bears_images_sha", "bears_images", ["tenant", "sha256"])
    op.create_table(
        "bears_subscriptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("recipient_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("lat", sa.Float),
        sa.Column("lon", sa.Float),
        sa.Column("radius_m", sa.Float),
        sa.Column("municipality", sa.String(6)),
        sa.Column("area_name", sa.String(200)),
        sa.Column("min_level", sa.Integer, nullable=False, server_default="1"),
        sa.Column("confirmed", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("confirmed_at", sa.String(32)),
        sa.Column("client", sa.String(64)),
    )
    op.create_index("ix_bears_subscriptions_area", "bears_subscriptions", ["lat", "lon"])
    op.create_index("ix_bears_subscriptions_client", "bears_subscriptions", ["client", "created_at"])
    op.create_index("ix_bears_subscriptions_recipient", "bears_subscriptions", ["tenant", "recipient_id"])
    op.create_index("ix_bears_subscriptions_muni", "bears_subscriptions", ["municipality"])
    op.create_index("ix_bears_subscriptions_token", "bears_subscriptions", ["token"], unique=True)
    op.create_table(
        "bears_alerts",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("sighting_id", sa.String(200), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("radius_m", sa.Float, nullable=False),
        sa.Column("issued_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("cancelled_at", sa.String(32)),
        sa.Column("recipients", sa.Integer, nullable=False, server_default="0"),
        sa.Column("request_id", sa.String(36)),
        sa.Column("info", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("updated_at", sa.String(32)),
        sa.UniqueConstraint("tenant", "sighting_id", name="uq_bears_alerts_sighting"),
    )
    op.create_index("ix_bears_alerts_expires", "bears_alerts", ["expires_at"])
    op.create_index("ix_bears_alerts_status", "bears_alerts", ["status", "expires_at"])
    op.create_table(
        "bears_dispatches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("sighting_id", sa.String(200)),
        sa.Column("image_id", sa.String(36)),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("observed_at", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("assignee", sa.String(200)),
        sa.Column("note", sa.Text),
        sa.Column("created_by", sa.String(200)),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_bears_dispatches_sighting", "bears_dispatches", ["tenant", "sighting_id"])
    op.create_index("ix_bears_dispatches_tenant", "bears_dispatches", ["tenant", "status"])


def downgrade() -> None:
    op.drop_table("bears_dispatches")
    op.drop_table("bears_alerts")
    op.drop_table("bears_subscriptions")
    op.drop_table("bears_images")
    op.drop_table("bears_reports")
