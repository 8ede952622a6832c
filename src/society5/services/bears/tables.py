"""The bears service's private tables (Alembic migration ``0011``): what is not public or is internal state.

Sightings and alerts themselves are broker entities (``BearSighting``, ``Alert``); these tables keep what
belongs to people or to the pipeline: who reported (a salted client hash for rate limits, optional contact),
image files and their classification, area subscriptions, the alert log (one alert per sighting), drone
dispatch tasks.
"""

import sqlalchemy as sa

from society5.core.db import JsonDoc, metadata

reports = sa.Table(
    "bears_reports",
    metadata,
    sa.Column("sighting_id", sa.String(200), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("client", sa.String(64), nullable=False),  # salted hash of the client address, for rate limits
    sa.Column("contact", sa.String(200)),  # optional phone or mail the reporter left for staff
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Index("ix_bears_reports_client", "client", "created_at"),
)

images = sa.Table(
    "bears_images",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("camera_id", sa.String(200)),  # the CameraTrap entity id; NULL for resident photos
    sa.Column("source", sa.String(16), nullable=False),  # upload | folder | mqtt | drone | resident
    sa.Column("taken_at", sa.String(32), nullable=False),
    sa.Column("received_at", sa.String(32), nullable=False),
    sa.Column("label", sa.String(16)),  # bear | other_animal | person | vehicle | empty; NULL: not classified
    sa.Column("confidence", sa.Float),
    sa.Column("bear_score", sa.Float),
    sa.Column("box", JsonDoc),  # [x0, y0, x1, y1] of the deciding region
    sa.Column("event_id", sa.String(36)),  # frames of one trigger (burst) share it
    sa.Column("sighting_id", sa.String(200)),
    sa.Column("path", sa.String(300)),  # the EXIF-free copy, relative to BEARS_DIR; NULL once deleted
    sa.Column("thumb_path", sa.String(300)),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("delete_after", sa.String(32)),  # person images: deleted (files and all) after this time
    sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("lat", sa.Float),  # where it was taken: the camera's place, or a drone's position
    sa.Column("lon", sa.Float),
    sa.Index("ix_bears_images_event", "event_id"),
    sa.Index("ix_bears_images_sighting", "tenant", "sighting_id"),
    sa.Index("ix_bears_images_camera", "tenant", "camera_id", "taken_at"),
    sa.Index("ix_bears_images_delete", "delete_after"),
    sa.Index("ix_bears_images_sha", "tenant", "sha256"),
)

subscriptions = sa.Table(
    "bears_subscriptions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("recipient_id", sa.String(128), nullable=False),  # a notify recipient of the same tenant
    sa.Column("kind", sa.String(16), nullable=False),  # resident | school | staff | system
    sa.Column("lat", sa.Float),  # a circle (lat, lon, radius_m) …
    sa.Column("lon", sa.Float),
    sa.Column("radius_m", sa.Float),
    sa.Column("municipality", sa.String(6)),  # … or a whole municipality (団体コード)
    sa.Column("area_name", sa.String(200)),
    sa.Column("min_level", sa.Integer, nullable=False, server_default="1"),
    sa.Column("confirmed", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("token", sa.String(64), nullable=False),  # confirm / unsubscribe links
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("confirmed_at", sa.String(32)),
    sa.Column("client", sa.String(64)),  # public sign-ups: salted hash of the client address, for rate limits
    sa.Index("ix_bears_subscriptions_area", "lat", "lon"),
    sa.Index("ix_bears_subscriptions_client", "client", "created_at"),
    sa.Index("ix_bears_subscriptions_recipient", "tenant", "recipient_id"),
    sa.Index("ix_bears_subscriptions_muni", "municipality"),
    sa.Index("ix_bears_subscriptions_token", "token", unique=True),
)

alerts = sa.Table(
    "bears_alerts",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),  # the Alert entity id
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
    sa.Column("request_id", sa.String(36)),  # the notify request that fanned it out
    sa.Column("info", JsonDoc, nullable=False),  # headline, area, instruction … (CAP fields)
    # active | cancelled | expired
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),  # +1 when a higher level re-alerts
    sa.Column("updated_at", sa.String(32)),
    sa.UniqueConstraint("tenant", "sighting_id", name="uq_bears_alerts_sighting"),
    sa.Index("ix_bears_alerts_expires", "expires_at"),
    sa.Index("ix_bears_alerts_status", "status", "expires_at"),
)

dispatches = sa.Table(
    "bears_dispatches",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("sighting_id", sa.String(200)),
    sa.Column("image_id", sa.String(36)),
    sa.Column("lat", sa.Float, nullable=False),
    sa.Column("lon", sa.Float, nullable=False),
    sa.Column("observed_at", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open | assigned | done | cancelled
    sa.Column("assignee", sa.String(200)),
    sa.Column("note", sa.Text),
    sa.Column("created_by", sa.String(200)),  # a staff name, or "auto" for a confident camera detection
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
    sa.Index("ix_bears_dispatches_sighting", "tenant", "sighting_id"),
    sa.Index("ix_bears_dispatches_tenant", "tenant", "status"),
)
