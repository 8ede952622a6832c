"""LINE Messaging API push messages (``POST {base}/v2/bot/message/push``).

As LINE documents it: ``Authorization: Bearer <channel access token>``, a JSON body
``{"to": userId, "messages": [{"type": "text", "text": …}]}`` with at most 5,000 characters of text, and
``X-Line-Retry-Key`` (a UUID) so that a retried request is accepted once; a retry LINE already accepted is
answered 409, which counts as sent. 429 waits for ``Retry-After``; 400/401/403 can never succeed; 5xx is
retried.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import httpx
import orjson

from society5.core.outbox import Defer, GiveUp
from society5.notify.channels.aio import Answer, AsyncPoster
from society5.notify.channels.base import Outgoing, checked, outcome_of

MAX_TEXT = 5000
# A user id (U…), group id (C…) or room id (R…): a letter and 32 hex digits.
_ADDRESS = re.compile(r"^[UCR][0-9a-f]{32}$")
DEFAULT_RETRY_AFTER_S = 60.0


def check_address(address: str) -> str:
    if not _ADDRESS.match(address):
        raise ValueError(f"{address!r} is not a LINE user id ('U' and 32 hex digits)")
    return address


def message_text(title: str, text: str) -> str:
    """Title and body in one text, cut to LINE's limit (counted in UTF-16 units, so emoji count as two)."""
    full = f"{title}\n\n{text}" if title else text
    if len(full.encode("utf-16-le")) // 2 <= MAX_TEXT:
        return full
    cut = full.encode("utf-16-le")[: (MAX_TEXT - 1) * 2].decode("utf-16-le", errors="ignore")
    return cut + "…"


def retry_after(value: str | None) -> float:
    try:
        return max(1.0, float(value)) if value else DEFAULT_RETRY_AFTER_S
    except ValueError:
        return DEFAULT_RETRY_AFTER_S


class LineChannel:
    name = "line"

    def __init__(self, token: str, base_url: str, client: httpx.Client, poster: AsyncPoster | None = None):
        self.token = token
        self.url = base_url.rstrip("/") + "/v2/bot/message/push"
        self.client = client
        self.poster = poster

    def _request(self, out: Outgoing) -> tuple[bytes, dict[str, str]]:
        if not self.token:
            raise GiveUp("LINE is not configured: set SOCIETY5_LINE_CHANNEL_ACCESS_TOKEN")
        body = {"to": out.address, "messages": [{"type": "text", "text": message_text(out.title, out.text)}]}
        headers = {"Authorization": f"Bearer {self.token}", "X-Line-Retry-Key": out.delivery_id,
                   "Content-Type": "application/json"}
        return orjson.dumps(body), headers

    def send(self, out: Outgoing) -> None:
        body, headers = self._request(out)
        check(self.client.post(self.url, content=body, headers=headers))

    def send_many(self, outs: Sequence[Outgoing]) -> list[Exception | None]:
        """Send a batch concurrently; per message ``None`` (accepted) or the exception ``send`` raises."""
        if self.poster is None or not self.token:
            return [outcome_of(self.send, out) for out in outs]
        answers = self.poster.post_many([(self.url, *self._request(out)) for out in outs])
        return [checked(check, answer) for answer in answers]


def check(response: httpx.Response | Answer) -> None:
    status = response.status_code
    if 200 <= status < 300 or status == 409:
        return
    detail = f"LINE answered {status}: {response.text[:300]}"
    if status == 429:
        raise Defer(retry_after(response.headers.get("retry-after")), detail)
    if 400 <= status < 500 and status != 408:
        raise GiveUp(detail)
    raise ConnectionError(detail)
