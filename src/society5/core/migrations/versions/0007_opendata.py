"""Open-data catalog: organizations and groups, datasets (JSON documents), their search terms, resources.

Full text: on SQLite an FTS5 table with the ``trigram`` tokenizer (substring search, which Japanese needs: it
has no spaces between words); on PostgreSQL a ``pg_trgm`` GIN index on ``search_text`` when the extension can
be created (else searches fall back to a scan with ILIKE, correct but slower).

Revision ID: 0007
Revises: 0003
"""

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
log = logging.getLogger(__name__)


def upgrade() -> None:
    op.create_table(
        "opendata_groups",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("is_organization", sa.Boolean, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("image_url", sa.Text, nullable=False),
        sa.Column("extras", JSON, nullable=False),
        sa.Column("created", sa.String(32), nullable=False),
    )
    op.create_table(
        "opendata_packages",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("owner_org", sa.String(36), sa.ForeignKey("opendata_groups.id"), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("private", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("title_sort", sa.Text, nullable=False),
        sa.Column("title_text", sa.Text, nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.Column("metadata_created", sa.String(32), nullable=False),
        sa.Column("metadata_modified", sa.String(32), nullable=False),
    )
    op.create_table(
        "opendata_package_docs",
        sa.Column("package_seq", sa.Integer,
                  sa.ForeignKey("opendata_packages.seq", ondelete="CASCADE"), primary_key=True),
        sa.Column("doc", JSON, nullable=False),
    )
    # Searches filter on state and visibility and sort by modification time; organization pages list by owner.
    op.create_index("ix_opendata_packages_state_modified", "opendata_packages",
                    ["state", "metadata_modified"])
    op.create_index("ix_opendata_packages_owner_org", "opendata_packages", ["owner_org"])
    op.create_table(
        "opendata_package_terms",
        sa.Column("package_seq", sa.Integer,
                  sa.ForeignKey("opendata_packages.seq", ondelete="CASCADE"), primary_key=True),
        sa.Column("field", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(200), primary_key=True),
    )
    # fq looks datasets up by (field, value); facet counts walk the primary key from the matched datasets.
    op.create_index("ix_opendata_package_terms_field_value", "opendata_package_terms",
                    ["field", "value", "package_seq"])
    op.create_table(
        "opendata_resources",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("package_seq", sa.Integer,
                  sa.ForeignKey("opendata_packages.seq", ondelete="CASCADE"), nullable=False),
    )
    op.create_index("ix_opendata_resources_package", "opendata_resources", ["package_seq"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE opendata_package_fts USING fts5(text, tokenize='trigram')")
    elif bind.dialect.name == "postgresql":
        _trigram_index(bind)


def _trigram_index(bind: sa.engine.Connection) -> None:
    """pg_trgm is a trusted extension (PostgreSQL 13+), but a role may still lack CREATE on the database:
    then the index is skipped (inside a savepoint, so the migration itself goes on)."""
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            bind.execute(sa.text(
                "CREATE INDEX ix_opendata_packages_search_trgm ON opendata_packages "
                "USING gin (search_text gin_trgm_ops)"
            ))
    except sa.exc.DBAPIError as err:
        log.warning("pg_trgm unavailable (%s): package_search text queries will scan", err.orig)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS opendata_package_fts")
    op.drop_table("opendata_resources")
    op.drop_table("opendata_package_terms")
    op.drop_table("opendata_package_docs")
    op.drop_table("opendata_packages")
    op.drop_table("opendata_groups")
