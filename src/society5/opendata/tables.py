"""Catalog tables (created by the Alembic migration ``0007`` in ``society5/core/migrations``).

A dataset is stored once as the JSON document ``package_show`` returns (``package_docs``), beside a narrow
row of the few columns that filters and sorts need (``packages``). What faceted search counts (tags,
groups, formats, licence …) is copied into ``package_terms``, one row per (dataset, field, value), so
``fq`` and facet counts are indexed lookups and ``GROUP BY``s instead of JSON scans. Free text lives in
``search_text`` (NFKC, case-folded); on SQLite an FTS5 ``trigram`` table (``opendata_package_fts``, rowid =
``packages.seq``, made by the migration) indexes it, on PostgreSQL a ``pg_trgm`` GIN index does (when the
extension could be created).
"""

import sqlalchemy as sa

from society5.core.db import JsonDoc, metadata

# Organizations and groups (categories) share one table and one name space, as in CKAN.
groups = sa.Table(
    "opendata_groups",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("is_organization", sa.Boolean, nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),  # whose operators edit the organization's datasets
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("image_url", sa.Text, nullable=False),
    sa.Column("extras", JsonDoc, nullable=False),  # [{"key", "value"}]
    sa.Column("created", sa.String(32), nullable=False),
)

packages = sa.Table(
    "opendata_packages",
    metadata,
    # An integer key: the FTS table's rowid and the compact key of package_terms.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("owner_org", sa.String(36), sa.ForeignKey("opendata_groups.id"), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),  # the owner organization's, copied for visibility
    sa.Column("private", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active, draft, deleted
    sa.Column("title_sort", sa.Text, nullable=False),  # normalized title (title_string sort)
    sa.Column("title_text", sa.Text, nullable=False),  # normalized title: a text match there scores higher
    sa.Column("search_text", sa.Text, nullable=False),
    sa.Column("metadata_created", sa.String(32), nullable=False),
    sa.Column("metadata_modified", sa.String(32), nullable=False),
)

# The documents apart from the columns searches scan, so a scan reads narrow rows.
package_docs = sa.Table(
    "opendata_package_docs",
    metadata,
    sa.Column("package_seq", sa.Integer, sa.ForeignKey("opendata_packages.seq", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("doc", JsonDoc, nullable=False),
)

package_terms = sa.Table(
    "opendata_package_terms",
    metadata,
    sa.Column("package_seq", sa.Integer, sa.ForeignKey("opendata_packages.seq", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("field", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(200), primary_key=True),
)

resources = sa.Table(
    "opendata_resources",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("package_seq", sa.Integer, sa.ForeignKey("opendata_packages.seq", ondelete="CASCADE"),
              nullable=False),
)
