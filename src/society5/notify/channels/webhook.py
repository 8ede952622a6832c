"""Webhook: POST the message as JSON, signed with HMAC-SHA256 when the recipient has a secret.

The signature is ``X-Society5-Signature: sha256=<hex>`` over the exact body bytes; ``X-Society5-Delivery``
carries the delivery id (stable across retries) so a receiver can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

import httpx
import orjson

from society5.core.outbox import Defer, GiveUp
from society5.core.timeutil import now_iso
from society5.notify.channels.base import Outgoing
from society5.notify.channels.line import retry_after

SIGNATURE_HEADER = "X-Society5-Signature"
DELIVERY_HEADER = "X-Society5-Delivery"


def check_address(address: str) -> str:
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(address) > 2000:
        raise ValueError(f"{address!r} is not an http(s):// URL")
    return address


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(out: Outgoing) -> bytes:
    return orjson.dumps({
        "deliveryId": out.delivery_id, "tenant": out.tenant, "recipient": out.recipient_id,
        "template": out.template, "lang": out.lang, "urgent": out.urgent,
        "title": out.title, "text": out.text, "sentAt": now_iso(),
    })


class WebhookChannel:
    name = "webhook"

    def __init__(self, client: httpx.Client):
        self.client = client

    def send(self, out: Outgoing) -> None:
        body = payload(out)
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: out.delivery_id}
        if out.secret:
            headers[SIGNATURE_HEADER] = sign(out.secret, body)
        response = self.client.post(out.address, content=body, headers=headers)
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = f"the webhook answered {status}: {response.text[:300]}"
        if status == 429 or (status == 503 and "retry-after" in response.headers):
            raise Defer(retry_after(response.headers.get("retry-after")), detail)
        if status in (400, 401, 403, 404, 405, 410, 413, 422):
            raise GiveUp(detail)
        raise ConnectionError(detail)
