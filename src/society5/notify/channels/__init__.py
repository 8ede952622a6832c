"""Channels, one module each: ``mail`` (SMTP), ``line`` (LINE Messaging API), ``webhook``, ``mqtt``."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from society5.core.settings import Settings
from society5.notify.channels import line, mail, mqtt, webhook
from society5.notify.channels.aio import AsyncPoster
from society5.notify.channels.base import BatchChannel, Channel, Outgoing

# The default escalation order for channels a recipient did not rank.
NAMES = ("line", "mail", "webhook", "mqtt")

ADDRESS_CHECKS: dict[str, Callable[[str], str]] = {
    "line": line.check_address,
    "mail": mail.check_address,
    "webhook": webhook.check_address,
    "mqtt": mqtt.check_address,
}


def build(settings: Settings, client: httpx.Client, poster: AsyncPoster | None = None) -> dict[str, Channel]:
    """The channels; ``poster`` (shared by LINE and webhooks) sends a batch of deliveries concurrently."""
    return {
        "line": line.LineChannel(settings.line_channel_access_token, settings.line_api_base, client, poster),
        "mail": mail.MailChannel(settings),
        "webhook": webhook.WebhookChannel(client, poster),
        "mqtt": mqtt.MqttChannel(settings.notify_timeout_s),
    }


__all__ = ["ADDRESS_CHECKS", "NAMES", "AsyncPoster", "BatchChannel", "Channel", "Outgoing", "build"]
