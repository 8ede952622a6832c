"""Catalog upkeep: fresh planner statistics on PostgreSQL after bulk changes.

A municipality loading thousands of datasets at once (a harvest, the demo, a migration from another portal)
leaves PostgreSQL's statistics describing the tables as they were; until autovacuum gets to them the planner
can pick a plan that is a hundred times slower (a state index instead of the text index). Every minute this
job analyzes the catalog tables that changed by more than a few hundred rows since their last analysis.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

TABLES = ("opendata_packages", "opendata_package_terms", "opendata_package_docs", "opendata_resources")
CHANGED_ROWS = 500


def analyze_changed(platform: Any, changed_rows: int = CHANGED_ROWS) -> list[str]:
    """ANALYZE the catalog tables with more than ``changed_rows`` changes since their statistics were made;
    the names analyzed (nothing on SQLite, whose planner needs no statistics for these queries)."""
    engine = platform.engine
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        stale = list(conn.execute(
            sa.text("SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(:names) "
                    "AND n_mod_since_analyze > :changed ORDER BY relname"),
            {"names": list(TABLES), "changed": changed_rows}).scalars())
    if stale:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in stale:  # names come from the fixed list above, never from a request
                conn.execute(sa.text(f'ANALYZE "{name}"'))
        log.info("analyzed %s after bulk changes", ", ".join(stale))
    return stale
