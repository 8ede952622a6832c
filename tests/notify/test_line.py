"""LINE push messages against a local stand-in that checks each request the way LINE documents it."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from society5.core.platform import Platform
from society5.core.tables import outbox as outbox_table
from society5.notify.notifier import Notifier
from society5.notify.recipients import RecipientStore
from society5.notify.templates import MessageTemplate, registry

from .conftest import LINE_TOKEN, LINE_USER, SmtpServer, StandIn, mail_settings, poll

registry.register(MessageTemplate(
    name="test.line", title={"ja": "除雪のお知らせ"}, body={"ja": "{{ text }}"}))


def _setup(platform: Platform, line: StandIn, make_notifier: Callable[..., Notifier],
           **more: object) -> Notifier:
    notifier = make_notifier(line_channel_access_token=LINE_TOKEN, line_api_base=line.url, **more)
    RecipientStore(platform.engine).create("011002", {
        "id": "hanako", "name": "札幌 花子", "channels": {"line": LINE_USER, "mail": "hanako@example.jp"}})
    return notifier


def test_a_push_message_as_line_documents_it(platform: Platform, line: StandIn,
                                             make_notifier: Callable[..., Notifier]) -> None:
    notifier = _setup(platform, line, make_notifier)
    [delivery_id] = notifier.tell(["hanako"], "test.line", {"text": "明朝、町内の除雪を行います。"},
                                  tenant="011002")
    assert platform.outbox.deliver_due() == 1
    assert line.problems == []
    [req] = line.requests
    assert req.json() == {"to": LINE_USER, "messages": [
        {"type": "text", "text": "除雪のお知らせ\n\n明朝、町内の除雪を行います。"}]}
    assert req.headers["x-line-retry-key"] == delivery_id
    sent = notifier.deliveries.get(delivery_id)
    assert sent is not None and (sent.status, sent.channel, sent.attempts) == ("sent", "line", 1)


def test_long_text_is_cut_to_the_limit(platform: Platform, line: StandIn,
                                       make_notifier: Callable[..., Notifier]) -> None:
    notifier = _setup(platform, line, make_notifier)
    notifier.tell(["hanako"], "test.line", {"text": "雪" * 4000 + "😀" * 1000}, tenant="011002")
    platform.outbox.deliver_due()
    assert line.problems == []
    text = line.requests[0].json()["messages"][0]["text"]
    assert len(text.encode("utf-16-le")) // 2 <= 5000 and text.endswith("…")


def test_429_waits_for_retry_after_with_the_same_retry_key(platform: Platform, line: StandIn,
                                                           make_notifier: Callable[..., Notifier]) -> None:
    notifier = _setup(platform, line, make_notifier)
    line.answer(429, {"Retry-After": "1"}, b'{"message":"The API rate limit has been exceeded."}')
    [delivery_id] = notifier.tell(["hanako"], "test.line", {"text": "x"}, tenant="011002")
    before = time.time()
    platform.outbox.deliver_due()
    after = time.time()
    waiting = notifier.deliveries.get(delivery_id)
    assert waiting is not None and waiting.status == "deferred" and waiting.attempts == 0
    with platform.engine.connect() as conn:
        next_at, attempts = conn.execute(sa.select(outbox_table.c.next_at, outbox_table.c.attempts)).one()
    assert before + 1 <= next_at <= after + 1.1 and attempts == 0
    if time.time() < next_at - 0.1:
        assert platform.outbox.deliver_due() == 0  # not before Retry-After
    poll(lambda: platform.outbox.deliver_due())
    assert len(line.requests) == 2 and line.problems == []
    assert {r.headers["x-line-retry-key"] for r in line.requests} == {delivery_id}
    assert notifier.deliveries.get(delivery_id).status == "sent"  # type: ignore[union-attr]


def test_5xx_is_retried_and_409_means_already_accepted(platform: Platform, line: StandIn,
                                                       make_notifier: Callable[..., Notifier]) -> None:
    notifier = _setup(platform, line, make_notifier, notify_escalate_after=5)
    line.answer(500, body=b'{"message":"Internal error"}')
    line.answer(409, {"x-line-accepted-request-id": "abc"},
                b'{"message":"The retry key is already accepted"}')
    [delivery_id] = notifier.tell(["hanako"], "test.line", {"text": "x"}, tenant="011002")
    platform.outbox.deliver_due()
    failed = notifier.deliveries.get(delivery_id)
    assert failed is not None and failed.status == "failed" and failed.attempts == 1
    assert "LINE answered 500" in (failed.last_error or "")
    platform.outbox.deliver_due()
    sent = notifier.deliveries.get(delivery_id)
    assert sent is not None and sent.status == "sent" and sent.attempts == 2
    assert [r.headers["x-line-retry-key"] for r in line.requests] == [delivery_id, delivery_id]


def test_400_gives_up_and_falls_back_to_mail(platform: Platform, line: StandIn, smtp: SmtpServer,
                                             make_notifier: Callable[..., Notifier]) -> None:
    notifier = _setup(platform, line, make_notifier, **mail_settings(smtp))
    line.answer(400, body=b'{"message":"The property, \'to\', in the request body is invalid"}')
    [first] = notifier.tell(["hanako"], "test.line", {"text": "停電のお知らせ"}, tenant="011002")
    platform.outbox.deliver_due()
    platform.outbox.deliver_due()
    line_try, mail_try = sorted(notifier.deliveries.list("011002"), key=lambda d: d.channel != "line")
    assert (line_try.id, line_try.status, line_try.attempts) == (first, "dead", 1)
    assert "400" in (line_try.last_error or "")
    assert (mail_try.channel, mail_try.status, mail_try.parent) == ("mail", "sent", first)
    [(_, _, msg)] = smtp.box.messages
    assert msg["Subject"] == "除雪のお知らせ"


def test_a_bad_token_is_refused_by_the_stand_in_and_given_up(platform: Platform, line: StandIn,
                                                             make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(line_channel_access_token="wrong", line_api_base=line.url)
    RecipientStore(platform.engine).create("011002", {"id": "h", "name": "H",
                                                      "channels": {"line": LINE_USER}})
    [delivery_id] = notifier.tell(["h"], "test.line", {"text": "x"}, tenant="011002")
    platform.outbox.deliver_due()
    assert line.problems == ["Authorization must be 'Bearer <channel access token>'"]
    dead = notifier.deliveries.get(delivery_id)
    assert dead is not None and dead.status == "dead"
