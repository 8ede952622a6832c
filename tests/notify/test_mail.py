"""Mail through a real local SMTP server (aiosmtpd): headers, Japanese subject and body, text + HTML parts."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.header import decode_header, make_header

from society5.core.platform import Platform
from society5.notify.notifier import Notifier
from society5.notify.recipients import RecipientStore
from society5.notify.templates import MessageTemplate, registry

from .conftest import SmtpServer, StandIn, mail_settings

registry.register(MessageTemplate(
    name="test.mail",
    title={"ja": "【注意】{{ place }}でヒグマ出没", "en": "[Warning] Bear sighting at {{ place }}"},
    body={"ja": "{{ name }} 様\n\n{{ place }}でヒグマが目撃されました。<外出注意>",
          "en": "Dear {{ name }},\n\nA bear was seen at {{ place }}. <stay inside>"},
))


def _person(platform: Platform, **more: object) -> None:
    RecipientStore(platform.engine).create("011002", {
        "id": "taro", "name": "北海 太郎", "channels": {"mail": "taro@example.jp"}, **more})


def test_a_japanese_mail_arrives_as_utf8_multipart(platform: Platform, smtp: SmtpServer,
                                                   make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(**mail_settings(smtp, smtp_from="札幌市 防災担当 <society5@town.example.jp>"))
    _person(platform)
    [delivery_id] = notifier.tell(["taro"], "test.mail", {"name": "北海 太郎", "place": "南区"},
                                  tenant="011002")
    assert platform.outbox.deliver_due() == 1
    [(mail_from, rcpt_tos, msg)] = smtp.box.messages
    assert mail_from == "society5@town.example.jp" and rcpt_tos == ["taro@example.jp"]
    assert str(msg["Subject"]) == "【注意】南区でヒグマ出没"
    # On the wire the subject is 7-bit: RFC 2047 UTF-8 encoded words, folded over lines.
    head = smtp.box.raw[0].split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n[ \t]+", " ", head)
    [raw_subject] = [line[len("Subject: "):] for line in unfolded.split("\r\n")
                     if line.startswith("Subject: ")]
    assert raw_subject.lower().startswith("=?utf-8?")
    assert str(make_header(decode_header(raw_subject))) == "【注意】南区でヒグマ出没"
    assert "=?utf-8?" in unfolded.split("To: ", 1)[1].split("\r\n")[0].lower()  # the Japanese display name
    assert msg["From"].addresses[0].display_name == "札幌市 防災担当"
    assert msg["Message-ID"].endswith("@town.example.jp>")
    assert msg["To"].addresses[0].display_name == "北海 太郎"
    assert msg["To"].addresses[0].addr_spec == "taro@example.jp"
    assert msg["X-Society5-Delivery"] == delivery_id
    assert msg["Message-ID"] and msg["Date"]
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content_charset() == "utf-8" and html.get_content_charset() == "utf-8"
    assert "南区でヒグマが目撃されました。<外出注意>" in plain.get_content()
    assert "南区でヒグマが目撃されました。&lt;外出注意&gt;" in html.get_content()
    sent = notifier.deliveries.get(delivery_id)
    assert sent is not None and (sent.status, sent.attempts, sent.channel) == ("sent", 1, "mail")
    assert sent.sent_at is not None and sent.last_error is None


def test_english_recipients_get_english(platform: Platform, smtp: SmtpServer,
                                        make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(**mail_settings(smtp))
    _person(platform, language="en")
    notifier.tell(["taro"], "test.mail", {"name": "Taro", "place": "Minami-ku"}, tenant="011002")
    platform.outbox.deliver_due()
    [(_, _, msg)] = smtp.box.messages
    assert msg["Subject"] == "[Warning] Bear sighting at Minami-ku"


def test_smtp_login(platform: Platform, smtp_auth: SmtpServer,
                    make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(**mail_settings(smtp_auth, smtp_user="kita", smtp_password="s3cret-pass"))
    _person(platform)
    [delivery_id] = notifier.tell(["taro"], "notify.test", {"name": "太郎", "sender": "t"}, tenant="011002")
    platform.outbox.deliver_due()
    assert smtp_auth.logins == [("kita", "s3cret-pass")]
    assert len(smtp_auth.box.messages) == 1
    assert notifier.deliveries.get(delivery_id).status == "sent"  # type: ignore[union-attr]


def test_a_wrong_password_is_retried_not_given_up(platform: Platform, smtp_auth: SmtpServer,
                                                  make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(**mail_settings(smtp_auth, smtp_user="kita", smtp_password="wrong"))
    _person(platform)
    [delivery_id] = notifier.tell(["taro"], "notify.test", {"name": "太郎", "sender": "t"}, tenant="011002")
    platform.outbox.deliver_due()
    failed = notifier.deliveries.get(delivery_id)
    assert failed is not None and failed.status == "failed" and failed.attempts == 1
    assert "SMTPAuthenticationError" in (failed.last_error or "")
    assert smtp_auth.box.messages == []


def test_a_refused_address_escalates_to_the_next_channel(platform: Platform, smtp: SmtpServer, hook: StandIn,
                                                         make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(**mail_settings(smtp))
    smtp.box.refuse.add("taro@example.jp")
    _person(platform, channels={"mail": "taro@example.jp", "webhook": hook.url + "/taro"}, order=["mail"])
    [first] = notifier.tell(["taro"], "notify.test", {"name": "太郎", "sender": "t"}, tenant="011002")
    platform.outbox.deliver_due()
    platform.outbox.deliver_due()
    log = {d.channel: d for d in notifier.deliveries.list("011002")}
    assert (log["mail"].id, log["mail"].status) == (first, "dead")
    assert "550" in (log["mail"].last_error or "")
    assert log["webhook"].status == "sent" and log["webhook"].parent == first
    assert [r.path for r in hook.requests] == ["/taro"]


def test_mail_without_settings_gives_up_clearly(platform: Platform,
                                                make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    _person(platform)
    [delivery_id] = notifier.tell(["taro"], "notify.test", {"name": "太郎", "sender": "t"}, tenant="011002")
    platform.outbox.deliver_due()
    dead = notifier.deliveries.get(delivery_id)
    assert dead is not None and dead.status == "dead"
    assert "SOCIETY5_SMTP_HOST" in (dead.last_error or "")
