"""The broker as a service of the platform (same contract as every regional service)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from society5.broker import (
    api,
    contexts_api,
    notifier,
    retention,
    subscriptions_api,
    temporal_api,
    temporal_staging,
)
from society5.broker.core import Broker
from society5.broker.hot_paths import HotPaths
from society5.broker.jsonld import ContextStore
from society5.broker.mqtt import start as start_mqtt
from society5.broker.mqtt_api import router as mqtt_router
from society5.broker.subscriptions_match import NOTIFICATION
from society5.broker.subscriptions_store import SubscriptionStore
from society5.broker.tables import contexts as contexts_table
from society5.broker.temporal import DEFAULT_INSTANCE_LIMIT, TemporalStore
from society5.core.platform import Platform
from society5.core.service import Job, Service
from society5.core.timeutil import now_iso

log = logging.getLogger(__name__)


def start(platform: Platform) -> Broker:
    settings = platform.settings
    engine = platform.engine

    def persist(url: str, kind: str, body: Any) -> None:
        with engine.begin() as conn:
            conn.execute(sa.delete(contexts_table).where(contexts_table.c.url == url))
            row = {"url": url, "kind": kind, "body": body, "created_at": now_iso(), "uses": 0}
            conn.execute(contexts_table.insert().values(**row))

    store = ContextStore(
        fetch_hosts=settings.context_fetch_hosts,
        fetch_timeout_s=settings.context_fetch_timeout_s,
        persist=persist,
    )
    if settings.preload_contexts is not None:
        count = store.preload_dir(settings.preload_contexts)
        log.info("preloaded %d JSON-LD contexts from %s", count, settings.preload_contexts)
    with engine.connect() as conn:
        stored = sa.select(contexts_table.c.url, contexts_table.c.kind, contexts_table.c.body)
        for row in conn.execute(stored):
            try:
                store.add(row.url, row.body, kind=row.kind)
            except Exception:
                log.warning("stored @context %s is not valid; skipped", row.url)
    broker = Broker(engine, store, platform.tenants)
    platform.parts["broker"] = broker
    # History is recorded by a change listener, inside each write's transaction.
    limit = getattr(settings, "temporal_instance_limit", DEFAULT_INSTANCE_LIMIT)
    temporal = TemporalStore(engine, broker, limit, staged=getattr(settings, "temporal_staging", True))
    broker.changes_listeners.append(temporal.record_many)
    platform.parts["temporal"] = temporal
    # Subscriptions: matched by a change listener (notifications commit with the change), delivered by the
    # outbox.
    subs = notifier.Notifier(broker, SubscriptionStore(engine, broker.context), platform.outbox)
    broker.changes_listeners.append(subs.on_changes)
    if "subscriptions" in platform.parts:  # a second app on the same platform (tests): the newest delivers
        platform.outbox.handlers.pop(NOTIFICATION, None)
    platform.outbox.register(NOTIFICATION, subs.deliver)
    platform.parts["subscriptions"] = subs
    return broker


def stop(platform: Platform) -> None:
    subs = platform.parts.get("subscriptions")
    if subs is not None:
        subs.close()


def _routers() -> Any:
    from fastapi import APIRouter

    combined = APIRouter()
    combined.include_router(api.router)
    combined.include_router(contexts_api.router)
    combined.include_router(temporal_api.router)
    combined.include_router(mqtt_router)
    combined.include_router(subscriptions_api.router)
    return combined


service = Service(
    name="broker",
    title="データ連携基盤 (NGSI-LD)",
    title_en="Data-linkage platform (NGSI-LD context broker)",
    description="センサー・施設・車両などの状態を NGSI-LD で共有します。",
    router=_routers(),
    mount="",
    on_startup=start,
    background=start_mqtt,  # the MQTT ingestion bridge, when SOCIETY5_MQTT_URL is set
    on_shutdown=stop,
    jobs=(
        Job("temporal_retention", every=timedelta(hours=1), run=retention.job),
        Job("temporal_staging", every=timedelta(seconds=1), run=temporal_staging.job),
        Job("subscriptions_periodic", every=timedelta(seconds=1), run=notifier.periodic_job),
    ),
    middleware=(HotPaths,),
    listed=True,
)
