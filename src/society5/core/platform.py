"""The running platform: settings, database and stores, built once per app (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from society5.core.auth import KeyStore, TenantStore, UserStore
from society5.core.db import WalCheckpointer, make_engine, sqlite_file, upgrade
from society5.core.outbox import Outbox, RetryPolicy
from society5.core.settings import Settings


@dataclass
class Platform:
    settings: Settings
    engine: Engine
    keys: KeyStore
    users: UserStore
    tenants: TenantStore
    # Messages to the outside world, committed with the change that caused them (started by the server).
    outbox: Outbox
    # Components of higher layers (the broker, services' state) registered by name at start-up.
    parts: dict[str, Any] = field(default_factory=dict)
    # Embedded SQLite: the WAL is checkpointed off the request path (None on PostgreSQL).
    checkpointer: WalCheckpointer | None = None

    @classmethod
    def open(cls, settings: Settings, migrate: bool = True) -> Platform:
        engine = make_engine(settings)
        if migrate:
            upgrade(engine)
        path = sqlite_file(engine)
        return cls(
            checkpointer=WalCheckpointer(path).start() if path is not None else None,
            settings=settings,
            engine=engine,
            keys=KeyStore(engine),
            users=UserStore(engine),
            tenants=TenantStore(engine),
            outbox=Outbox(
                engine,
                policy=RetryPolicy(settings.outbox_retry_base_s, settings.outbox_retry_max_s,
                                   settings.outbox_max_attempts),
                workers=settings.outbox_workers,
            ),
        )

    def close(self) -> None:
        self.outbox.stop()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
        if self.checkpointer is not None:
            self.checkpointer.release()  # after the connections: it keeps a descriptor of the WAL index
