"""History retention per entity type: raw samples kept for days, aggregates and events kept for ever.

``SOCIETY5_TEMPORAL_RETENTION_DAYS`` maps entity types to days (JSON, e.g.
``{"PowerSample": 30, "*": 3650}``); ``*`` is the rule for every type not named (and for the history of
entities deleted since). Types are names in the core/default context or full IRIs. Without rules history is
kept for ever. The job deletes in small chunks, so a large first clean-up never holds SQLite's write lock for
long; every server process may run it (it is idempotent).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from society5.broker.jsonld import ActiveContext
from society5.broker.model import parse_types
from society5.broker.tables import entity_types
from society5.broker.temporal_tables import instances, recent, series

log = logging.getLogger(__name__)

CHUNK = 5_000
DAY_S = 86_400.0


def resolve_rules(rules: dict[str, float], ctx: ActiveContext) -> tuple[dict[str, float], float | None]:
    """Expanded type IRI → days, and the days of the ``*`` rule (None: keep for ever)."""
    typed: dict[str, float] = {}
    for name, days in rules.items():
        if name != "*":
            for iri in parse_types(name, ctx, "retention entity type"):
                typed[iri] = float(days)
    default = rules.get("*")
    return typed, None if default is None else float(default)


def enforce(engine: Engine, typed: dict[str, float], default_days: float | None,
            now: float | None = None) -> int:
    """Delete history older than each rule allows; returns the number of instances deleted."""
    now = time.time() if now is None else now
    deleted = 0
    for iri, days in typed.items():
        has_type = _of_type(entity_types.c.type == iri)
        deleted += _delete_older(engine, sa.select(series.c.sid).where(has_type), now - days * DAY_S)
    if default_days is not None:
        cond: Any = ~_of_type(entity_types.c.type.in_(sorted(typed))) if typed else sa.true()
        deleted += _delete_older(engine, sa.select(series.c.sid).where(cond), now - default_days * DAY_S)
    if deleted:
        log.info("retention removed %d history instances", deleted)
    return deleted


def _of_type(type_cond: Any) -> Any:
    """The series' entity currently has a type matching ``type_cond``."""
    return sa.exists().where(entity_types.c.tenant == series.c.tenant,
                             entity_types.c.entity_id == series.c.entity_id, type_cond)


def _delete_older(engine: Engine, sids: Any, cutoff: float) -> int:
    # Staged rows too (SQLite: see temporal_staging); that table holds only recent rows and is small. Rows
    # still in the change log are new; a later run finds them once they are expanded.
    return sum(_delete_older_in(engine, table, sids, cutoff) for table in (instances, recent))


def _delete_older_in(engine: Engine, table: sa.Table, sids: Any, cutoff: float) -> int:
    total = 0
    while True:
        chunk = (sa.select(table.c.id)
                 .where(table.c.sid.in_(sids.scalar_subquery()), table.c.ts < cutoff)
                 .limit(CHUNK))
        with engine.begin() as conn:
            n = conn.execute(table.delete().where(table.c.id.in_(chunk.scalar_subquery()))).rowcount
        total += n
        if n < CHUNK:
            return total


def job(platform: Any) -> int:
    """The periodic job: apply the configured rules (nothing to do when none are set)."""
    rules = platform.settings.temporal_retention_days
    if not rules:
        return 0
    typed, default = resolve_rules(rules, platform.parts["broker"].context(None))
    return enforce(platform.engine, typed, default)
