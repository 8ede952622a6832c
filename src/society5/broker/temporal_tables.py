"""Temporal history tables (created by migrations ``0002``, ``0012`` and ``0013``).

History is kept per *series*: one attribute (expanded IRI) of one entity with one ``datasetId`` (``""``
for the default instance). A series row interns ``(tenant, entity_id, attr, dataset_id)`` into a small
integer, so the instance table and its time index hold an 8-byte key instead of two long strings per row:
with tens of millions of instances the index stays a fraction of the size, and one series over a time range
is a single index range scan on ``(sid, deleted, ts)``.

Times are kept twice: the ISO strings as the client sent them (echoed back unchanged) and epoch seconds as
floats, which the database compares and buckets (``aggrPeriodDuration``) with plain arithmetic on both SQLite
and PostgreSQL.
"""

from typing import Any

import sqlalchemy as sa

from society5.core.db import JsonDoc, metadata

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (cheap, ordered by insertion).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

series = sa.Table(
    "broker_temporal_series",
    metadata,
    sa.Column("sid", BigId, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("entity_id", sa.String(512), nullable=False),
    sa.Column("attr", sa.String(512), nullable=False),
    sa.Column("dataset_id", sa.String(512), nullable=False),  # "" = the default instance
)

def _history_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("sid", sa.BigInteger, nullable=False),
        sa.Column("instance_id", sa.String(80), nullable=False),
        # A deletion record (attribute or entity deleted): its time is the deletion time (``deletedAt``).
        sa.Column("deleted", sa.Boolean, nullable=False),
        # observedAt in epoch seconds, else the time the instance was written: the default time axis.
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("observed_at", sa.String(40)),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("modified_at", sa.String(32), nullable=False),
        sa.Column("created_ts", sa.Float, nullable=False),
        sa.Column("modified_ts", sa.Float, nullable=False),
        # Numbers (booleans as 0/1) for aggregation in SQL; NULL for any other value.
        sa.Column("value_num", sa.Float),
        # The instance in the stored form of ``model.py`` (expanded sub-attribute names).
        sa.Column("instance", JsonDoc, nullable=False),
    ]


instances = sa.Table("broker_temporal_instances", metadata, *_history_columns())

# SQLite only (migration ``0012``): new history rows are appended here, in the order they were written, and
# moved into ``instances`` in bulk (``TemporalStore.settle``) by a background job and before anything reads or
# changes history. An append to a table without a secondary index writes a few pages per batch; the same
# rows inserted one batch at a time into the (sid, ts) index dirtied one index page per series and batch.
recent = sa.Table("broker_temporal_recent", metadata, *_history_columns())

# SQLite only (migration ``0013``): each write transaction's history as one row, the changed instances
# serialized in one piece ([[tenant, entity id, [[attr, instance], …], time written], …]); the staging job
# expands the rows into ``recent`` in id order, and so does anything that reads or changes history.
change_log = sa.Table(
    "broker_temporal_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
)
