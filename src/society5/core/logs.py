"""Logging configured once, at the entry point."""

from __future__ import annotations

import logging


def configure(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Migrations run at every start; their step-by-step chatter is noise unless something fails.
    logging.getLogger("alembic").setLevel(logging.WARNING)
