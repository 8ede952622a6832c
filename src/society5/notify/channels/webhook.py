"""Webhook: POST the message as JSON, signed with HMAC-SHA256 when the recipient has a secret.

The signature is ``X-Society5-Signature: sha256=<hex>`` over the exact body bytes; ``X-Society5-Delivery``
carries the delivery id (stable across retries) so a receiver can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx
import orjson

from society5.core.outbox import Defer, GiveUp
from society5.core.timeutil import now_iso
from society5.notify.channels.aio import Answer, AsyncPoster
from society5.notify.channels.base import Outgoing, checked, outcome_of
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

    def __init__(self, client: httpx.Client, poster: AsyncPoster | None = None):
        self.client = client
        self.poster = poster

    def send(self, out: Outgoing) -> None:
        body, headers = _body_and_headers(out)
        check(self.client.post(out.address, content=body, headers=headers))

    def send_many(self, outs: Sequence[Outgoing]) -> list[Exception | None]:
        """Send a batch concurrently; per message ``None`` (accepted) or the exception ``send`` raises."""
        if self.poster is None:
            return [outcome_of(self.send, out) for out in outs]
        requests = [(out.address, *_body_and_headers(out)) for out in outs]
        return [checked(check, answer) for answer in self.poster.post_many(requests)]


def _body_and_headers(out: Outgoing) -> tuple[bytes, dict[str, str]]:
    body = payload(out)
    headers = {"Content-Type": "application/json", DELIVERY_HEADER: out.delivery_id}
    if out.secret:
        headers[SIGNATURE_HEADER] = sign(out.secret, body)
    return body, headers


def check(response: httpx.Response | Answer) -> None:
    """Return when the receiver accepted the message; raise ``Defer``, ``GiveUp`` or ``ConnectionError``."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = f"the webhook answered {status}: {response.text[:300]}"
    if status == 429 or (status == 503 and "retry-after" in response.headers):
        raise Defer(retry_after(response.headers.get("retry-after")), detail)
    if status in (400, 401, 403, 404, 405, 410, 413, 422):
        raise GiveUp(detail)
    raise ConnectionError(detail)
