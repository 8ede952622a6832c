"""Telling recipients: transactions, quiet hours, rate limits, retries, escalation and the delivery log."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from html import unescape as html_unescape

import pytest
import sqlalchemy as sa

from society5.core.errors import BadRequest, NotFound
from society5.core.outbox import DEAD, PENDING
from society5.core.platform import Platform
from society5.core.tables import outbox as outbox_table
from society5.notify.notifier import KIND, Notifier
from society5.notify.quiet import zone
from society5.notify.recipients import RecipientStore
from society5.notify.templates import MessageTemplate, registry

from .conftest import SmtpServer, StandIn, StillBucket, mail_settings, poll

TEST = {"name": "太郎", "sender": "tester"}


def _outbox(platform: Platform) -> list[tuple[str, str, float]]:
    t = outbox_table
    with platform.engine.connect() as conn:
        query = sa.select(t.c.key, t.c.status, t.c.next_at).where(t.c.kind == KIND).order_by(t.c.id)
        rows = conn.execute(query)
        return [(r.key, r.status, r.next_at) for r in rows]


def test_tell_joins_the_callers_transaction(platform: Platform, hook: StandIn,
                                            make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    RecipientStore(platform.engine).create("011002", {"id": "a", "name": "A",
                                                      "channels": {"webhook": hook.url}})
    with pytest.raises(RuntimeError), platform.engine.begin() as conn:
        notifier.tell(["a"], "notify.test", TEST, tenant="011002", conn=conn)
        raise RuntimeError("the change that caused the message failed")
    assert notifier.deliveries.list("011002") == [] and _outbox(platform) == []
    with platform.engine.begin() as conn:
        ids = notifier.tell(["a"], "notify.test", TEST, tenant="011002", conn=conn)
    assert [key for key, _, _ in _outbox(platform)] == ids
    platform.outbox.deliver_due()
    assert len(hook.requests) == 1


def test_bad_calls_queue_nothing(platform: Platform, make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    store = RecipientStore(platform.engine)
    store.create("011002", {"id": "a", "name": "A", "channels": {"mail": "a@example.jp"}})
    store.create("012025", {"id": "b", "name": "B", "channels": {"mail": "b@example.jp"}})
    with pytest.raises(NotFound, match="'b'"):  # b lives in another tenant
        notifier.tell(["a", "b"], "notify.test", TEST, tenant="011002")
    with pytest.raises(BadRequest, match="sender"):
        notifier.tell(["a"], "notify.test", {"name": "A"}, tenant="011002")
    with pytest.raises(BadRequest, match="no message template"):
        notifier.tell(["a"], "no.such", {}, tenant="011002")
    with pytest.raises(BadRequest, match="fax"):
        notifier.tell(["a"], "notify.test", TEST, tenant="011002", channels=["fax"])
    assert notifier.deliveries.list("011002") == [] and _outbox(platform) == []


def test_inactive_recipients_and_channel_choice(platform: Platform, hook: StandIn,
                                                make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    store = RecipientStore(platform.engine)
    both = {"mail": "a@example.jp", "webhook": hook.url}
    store.create("011002", {"id": "a", "name": "A", "channels": both})
    store.create("011002", {"id": "off", "name": "Off", "channels": both, "active": False})
    assert notifier.tell(["off"], "notify.test", TEST, tenant="011002") == []
    [one] = notifier.tell(["a"], "notify.test", TEST, tenant="011002", channels=["webhook"])
    assert notifier.deliveries.get(one).channel == "webhook"  # type: ignore[union-attr]
    every = notifier.tell(["a"], "notify.test", TEST, tenant="011002", all_channels=True)
    assert sorted(notifier.deliveries.get(i).channel for i in every) == ["mail", "webhook"]  # type: ignore[union-attr]


def test_quiet_hours_defer_all_but_urgent(platform: Platform, hook: StandIn,
                                          make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    notifier.clock = lambda: datetime(2025, 1, 15, 23, 30, tzinfo=zone("Asia/Tokyo")).astimezone(UTC)
    RecipientStore(platform.engine).create("011002", {
        "id": "a", "name": "A", "channels": {"webhook": hook.url},
        "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Asia/Tokyo"}})
    [calm] = notifier.tell(["a"], "notify.test", TEST, tenant="011002")
    [urgent] = notifier.tell(["a"], "notify.test", TEST, tenant="011002", urgent=True)
    waiting = notifier.deliveries.get(calm)
    assert waiting is not None and (waiting.status, waiting.last_error) == ("deferred", "quiet hours")
    next_at = {key: at for key, _, at in _outbox(platform)}
    assert next_at[calm] - time.time() == pytest.approx(7.5 * 3600, abs=60)
    assert platform.outbox.deliver_due() == 1
    assert notifier.deliveries.get(urgent).status == "sent"  # type: ignore[union-attr]
    # A deferred message that comes due while quiet hours still hold (they were changed) waits again.
    with platform.engine.begin() as conn:
        conn.execute(sa.update(outbox_table).where(outbox_table.c.key == calm).values(next_at=time.time()))
    assert platform.outbox.deliver_due() == 1
    assert notifier.deliveries.get(calm).status == "deferred"  # type: ignore[union-attr]
    assert len(hook.requests) == 1
    notifier.clock = lambda: datetime(2025, 1, 16, 7, 0, tzinfo=zone("Asia/Tokyo")).astimezone(UTC)
    with platform.engine.begin() as conn:
        conn.execute(sa.update(outbox_table).where(outbox_table.c.key == calm).values(next_at=time.time()))
    platform.outbox.deliver_due()
    assert notifier.deliveries.get(calm).status == "sent"  # type: ignore[union-attr]


def test_rate_limit_defers_the_excess(platform: Platform, smtp: SmtpServer,
                                      make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(**mail_settings(smtp), notify_rate_mail=4.0)
    # The bucket's clock stands still through the first round: on a slow machine six SMTP sessions take
    # longer than the 250 ms in which the burst must fit, and the limit would rightly let a fifth one go.
    still = StillBucket(4.0)
    notifier.limits["mail"] = still.bucket
    store = RecipientStore(platform.engine)
    for i in range(6):
        store.create("011002", {"id": f"p{i}", "name": f"P{i}", "channels": {"mail": f"p{i}@example.jp"}})
    started = time.monotonic()
    notifier.tell([f"p{i}" for i in range(6)], "notify.test", TEST, tenant="011002")
    platform.outbox.deliver_due()
    statuses = sorted(d.status for d in notifier.deliveries.list("011002"))
    assert statuses == ["deferred", "deferred", "sent", "sent", "sent", "sent"]  # a burst of 4, then 4/s
    deferred = notifier.deliveries.list("011002", status="deferred")
    assert all(d.last_error == "mail rate limit" for d in deferred)
    still.release()
    poll(lambda: platform.outbox.deliver_due() == 0 and len(smtp.box.messages) == 6)
    assert time.monotonic() - started >= 0.4
    assert {d.status for d in notifier.deliveries.list("011002")} == {"sent"}


def test_retries_then_escalation_then_the_last_channel_keeps_trying(
        platform: Platform, hook: StandIn, smtp: SmtpServer, make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(**mail_settings(smtp), notify_escalate_after=2)
    RecipientStore(platform.engine).create("011002", {
        "id": "a", "name": "A", "channels": {"webhook": hook.url, "mail": "a@example.jp"},
        "order": ["webhook", "mail"]})
    for _ in range(2):
        hook.answer(503, body=b"maintenance")
    [first] = notifier.tell(["a"], "notify.test", TEST, tenant="011002")
    platform.outbox.deliver_due()
    retrying = notifier.deliveries.get(first)
    assert retrying is not None and (retrying.status, retrying.attempts) == ("failed", 1)
    platform.outbox.deliver_due()
    platform.outbox.deliver_due()
    log = {d.channel: d for d in notifier.deliveries.list("011002")}
    assert (log["webhook"].status, log["webhook"].attempts) == ("dead", 2)
    assert "503" in (log["webhook"].last_error or "")
    assert (log["mail"].status, log["mail"].parent, log["mail"].request) == ("sent", first, retrying.request)
    assert len(hook.requests) == 2 and len(smtp.box.messages) == 1


def test_the_only_channel_uses_the_full_retry_schedule(platform: Platform, hook: StandIn,
                                                       make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(notify_escalate_after=1)
    RecipientStore(platform.engine).create("011002", {"id": "a", "name": "A",
                                                      "channels": {"webhook": hook.url}})
    for _ in range(10):
        hook.answer(500)
    [only] = notifier.tell(["a"], "notify.test", TEST, tenant="011002")
    for _ in range(6):
        platform.outbox.deliver_due()
    dead = notifier.deliveries.get(only)
    assert dead is not None and (dead.status, dead.attempts) == ("dead", 4)  # the outbox's max_attempts
    assert len(hook.requests) == 4 and len(notifier.deliveries.list("011002")) == 1


def test_delivery_log_filters(platform: Platform, hook: StandIn,
                              make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    store = RecipientStore(platform.engine)
    store.create("011002", {"id": "a", "name": "A", "channels": {"webhook": hook.url + "/a"}})
    store.create("011002", {"id": "b", "name": "B", "channels": {"webhook": hook.url + "/b"}})
    hook.answer(200)
    hook.answer(410)
    notifier.tell(["a", "b"], "notify.test", TEST, tenant="011002")
    platform.outbox.deliver_due()
    assert [d.recipient for d in notifier.deliveries.list("011002", status="sent")] == ["a"]
    assert [d.status for d in notifier.deliveries.list("011002", recipient="b")] == ["dead"]
    assert notifier.deliveries.list("012025") == []
    with pytest.raises(BadRequest, match="status"):
        notifier.deliveries.list("011002", status="lost")
    entry = notifier.deliveries.list("011002", recipient="a")[0].public()
    assert set(entry) >= {"id", "tenant", "recipient", "channel", "template", "status", "attempts",
                          "last_error", "created_at", "sent_at"}


def test_reconcile_repairs_a_missed_outcome(platform: Platform, hook: StandIn,
                                            make_notifier: Callable[..., Notifier]) -> None:
    """A process that died between the outbox's record and the observer left the log behind."""
    notifier = make_notifier()
    RecipientStore(platform.engine).create("011002", {
        "id": "a", "name": "A", "channels": {"webhook": hook.url, "mail": "a@example.jp"},
        "order": ["webhook"]})
    [first] = notifier.tell(["a"], "notify.test", TEST, tenant="011002")
    platform.outbox.observers.remove(notifier.observe)
    hook.answer(410)
    platform.outbox.deliver_due()
    platform.outbox.observers.append(notifier.observe)
    assert notifier.deliveries.get(first).status == "queued"  # type: ignore[union-attr]
    assert notifier.reconcile(grace_s=-1) == 1
    assert notifier.deliveries.get(first).status == "dead"  # type: ignore[union-attr]
    assert [d.channel for d in notifier.deliveries.list("011002", status="queued")] == ["mail"]
    assert notifier.reconcile(grace_s=-1) == 0  # the escalated delivery is pending; nothing to repair
    assert {s for _, s, _ in _outbox(platform)} == {DEAD, PENDING}


def test_a_render_error_for_one_language_leaves_the_callers_transaction_clean(
        platform: Platform, make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    registry.register(MessageTemplate("test.lopsided", title={"ja": "題", "en": "Title"},
                                      body={"ja": "本文", "en": "Body {{ only_in_english }}"}))
    store = RecipientStore(platform.engine)
    store.create("011002", {"id": "ja", "name": "J", "channels": {"mail": "j@example.jp"}})
    store.create("011002", {"id": "en", "name": "E", "channels": {"mail": "e@example.jp"}, "language": "en"})
    with platform.engine.begin() as conn:
        try:
            notifier.tell(["ja", "en"], "test.lopsided", {}, tenant="011002", conn=conn)
        except BadRequest as err:  # the caller carries on and commits its own work
            assert "only_in_english" in err.detail
        else:
            raise AssertionError("the English rendering should have failed")
    assert notifier.deliveries.list("011002") == [] and _outbox(platform) == []


PERSONAL = MessageTemplate(
    name="test.personal",
    title={"ja": "{{ place }}のお知らせ", "en": "Notice for {{ place }}"},
    body={"ja": "{{ place }}で出没。\n停止: {{ link }}", "en": "Seen at {{ place }}.\nStop: {{ link }}"},
)
FILTERED = MessageTemplate(
    name="test.personal_filtered",
    title={"ja": "お知らせ"},
    body={"ja": "{% if code %}停止: {{ link | upper }}{% endif %}"},
)


@pytest.mark.parametrize("template", [PERSONAL, FILTERED], ids=["marks", "fallback"])
def test_personal_values_give_each_recipient_the_same_message_a_full_render_would(
        platform: Platform, make_notifier: Callable[..., Notifier], template: MessageTemplate) -> None:
    registry.register(template)
    notifier = make_notifier()
    store = RecipientStore(platform.engine)
    people = {"a": "ja", "b": "en", "c": "ja"}
    for rid, lang in people.items():
        store.create("011002", {"id": rid, "name": rid, "language": lang,
                                "channels": {"mail": f"{rid}@example.jp"}})
    links = {"a": "https://x.jp/u?token=A&x=<1>", "b": "https://x.jp/u?token=B", "c": "https://x.jp/u?token=C"}
    ctx = {"place": "藻岩山 <南>", "code": "1"}
    renders: list[str] = []
    real_render = notifier.templates.render

    def counting(name: str, context: object, lang: str) -> object:
        renders.append(lang)
        return real_render(name, context, lang)  # type: ignore[arg-type]

    notifier.templates.render = counting  # type: ignore[method-assign,assignment]
    ids = notifier.tell(list(people), template.name, ctx, tenant="011002",
                        personal=lambda p: {"link": links[p.id]})
    # marks: one render per language; a template that transforms the value: one more per recipient
    assert len(renders) == 2 + (0 if template is PERSONAL else len(people))
    for delivery_id in ids:
        got = notifier.deliveries.get(delivery_id)
        assert got is not None
        full = registry.render(template.name, {**ctx, "link": links[got.recipient]}, people[got.recipient])
        assert (got.title, got.body_text) == (full.title, full.text)
        # the HTML part escapes the same characters (as entities that may be spelled differently)
        assert html_unescape(got.body_html) == html_unescape(full.html)
        assert "S5MARK" not in got.body_text + got.body_html
