"""Notify tables (created by the Alembic migration ``0006`` in ``society5/core/migrations``)."""

import sqlalchemy as sa

from society5.core.db import JsonDoc, metadata

recipients = sa.Table(
    "notify_recipients",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("channels", JsonDoc, nullable=False),  # {"mail": "a@b.jp", "line": "U…", …}
    sa.Column("channel_order", JsonDoc, nullable=False),  # preferred channels first
    sa.Column("quiet_start", sa.String(5)),  # "22:00" local time, or NULL for none
    sa.Column("quiet_end", sa.String(5)),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("webhook_secret", sa.String(256)),
    sa.Column("tags", JsonDoc, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)

deliveries = sa.Table(
    "notify_deliveries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # a UUID: also LINE's X-Line-Retry-Key
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("request", sa.String(36), nullable=False),  # one tell() call
    sa.Column("recipient", sa.String(128), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("route", JsonDoc, nullable=False),  # channels this message may escalate through, in order
    sa.Column("parent", sa.String(36)),  # the dead delivery this one escalated from
    sa.Column("template", sa.String(128), nullable=False),
    sa.Column("lang", sa.String(8), nullable=False),
    sa.Column("urgent", sa.Boolean, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body_text", sa.Text, nullable=False),
    sa.Column("body_html", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
    sa.Column("sent_at", sa.String(32)),
)
