"""The platform's one Notifier, built from settings by the notify service or whoever needs it first."""

from __future__ import annotations

from typing import Any

import httpx

from society5.core.outbox import Outbox
from society5.core.settings import Settings
from society5.notify import channels
from society5.notify.notifier import Notifier
from society5.notify.ratelimit import TokenBucket

PART = "notify"


def build(s: Settings, outbox: Outbox) -> Notifier:
    # One pooled client for LINE and webhooks; redirects are not followed (a moved endpoint is a failure
    # an operator should see, and following it could POST the message somewhere unintended).
    client = httpx.Client(timeout=s.notify_timeout_s, follow_redirects=False)
    limits = {
        "mail": TokenBucket(s.notify_rate_mail), "line": TokenBucket(s.notify_rate_line),
        "webhook": TokenBucket(s.notify_rate_webhook), "mqtt": TokenBucket(s.notify_rate_mqtt),
    }
    # Batches of deliveries (an area alert to thousands) go out concurrently from one event loop.
    poster = channels.AsyncPoster(s.notify_timeout_s)
    notifier = Notifier(outbox, channels.build(s, client, poster), limits=limits,
                        escalate_after=s.notify_escalate_after)
    notifier.closers.append(client.close)
    notifier.closers.append(poster.close)
    return notifier.attach()


def notifier_of(platform: Any) -> Notifier:
    """The platform's Notifier, built and attached to the outbox on first use."""
    found: Notifier | None = platform.parts.get(PART)
    if found is None:
        found = platform.parts[PART] = build(platform.settings, platform.outbox)
    return found


def close(platform: Any) -> None:
    found: Notifier | None = platform.parts.get(PART)
    if found is not None:
        found.close()
