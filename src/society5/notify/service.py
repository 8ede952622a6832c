"""The notify layer as a service: builds the platform's Notifier, its HTTP API, upkeep job and staff page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from society5.core.service import Job, Service
from society5.notify import api, pages
from society5.notify.startup import close, notifier_of


def _upkeep(platform: Any) -> None:
    notifier = notifier_of(platform)
    notifier.reconcile()
    notifier.prune(platform.settings.notify_keep_days)


service = Service(
    name="notify",
    title="通知",
    title_en="Notifications",
    description="メール・LINE・Webhook・MQTT で職員や住民に知らせます（宛先、テンプレート、配信ログ）。",
    router=api.router,
    pages=pages.router,
    jobs=(Job("upkeep", every=timedelta(minutes=1), run=_upkeep),),
    on_startup=notifier_of,
    on_shutdown=close,
    extra={"description_en": "Tells staff and residents by mail, LINE, webhook and MQTT (recipients, "
                             "templates, delivery log)."},
)
