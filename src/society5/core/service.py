"""The service contract: one small declarative object per service, found through an entry point group.

Built-in features (the broker, the web shell) use the same contract as the regional services, so an app is
exactly the list of services handed to ``create_app``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "society5.services"


@dataclass(frozen=True)
class Job:
    """A periodic task; ``run(platform)`` is called every ``every`` by the job runner."""

    name: str
    every: timedelta
    run: Callable[[Any], object]


@dataclass(frozen=True)
class Service:
    name: str
    title: str
    title_en: str = ""
    description: str = ""
    router: Any = None  # fastapi.APIRouter mounted at /<name> unless mount says otherwise
    mount: str | None = None
    pages: Any = None  # fastapi.APIRouter with HTML pages
    cli: Any = None  # typer.Typer added as `society5 <name>`
    jobs: tuple[Job, ...] = ()
    entity_types: tuple[str, ...] = ()
    simulate: Callable[[Any], object] | None = None
    listed: bool = True  # shown on the top page
    on_startup: Callable[[Any], object] | None = None
    on_shutdown: Callable[[Any], object] | None = None
    # Started with the platform when the server starts serving (not when an app is merely built, as tests do);
    # returns an object whose ``stop()`` is called at shutdown. For long-running loops: bridges, dispatchers.
    background: Callable[[Any], Any] | None = None  # may return None: nothing to run
    # ASGI middleware classes (``cls(app)``) wrapped around the whole app, in front of FastAPI's own error
    # handling, e.g. a fast path for hot routes: they must answer their own errors (``web.app.Society5App``).
    middleware: tuple[Callable[[Any], Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").isalnum() or self.name.lower() != self.name:
            raise ValueError(f"service name must be a snake_case noun, not {self.name!r}")


def discover() -> list[Service]:
    """All services installed in this environment, in entry-point order (broken ones are logged, skipped)."""
    found: list[Service] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            svc = ep.load()
        except Exception:  # a broken add-on must not take the platform down
            log.exception("service entry point %s failed to load", ep.name)
            continue
        if isinstance(svc, Service):
            found.append(svc)
        else:
            log.error("entry point %s is not a Service", ep.name)
    return found


def by_name(services: Sequence[Service]) -> dict[str, Service]:
    names: dict[str, Service] = {}
    for svc in services:
        if svc.name in names:
            raise ValueError(f"two services are named {svc.name!r}")
        names[svc.name] = svc
    return names
