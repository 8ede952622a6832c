"""Bulk fan-out: one outbox message per batch of deliveries, sent at once, outcomes recorded per delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from society5.core.platform import Platform
from society5.core.tables import outbox as outbox_table
from society5.notify.channels import mail
from society5.notify.notifier import KIND, Notifier
from society5.notify.recipients import RecipientStore

from .conftest import SmtpServer, StillBucket, mail_settings, poll

TEST = {"name": "太郎", "sender": "tester"}
SECRET = "a-very-secret-signing-key"


class Sink:
    """A local HTTP receiver: 200, or 500 for the paths in ``failing``; records every request."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with sink.lock:
                    sink.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = 500 if self.path in sink.failing else 200
                answer = b"down" if status == 500 else b"{}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def paths(self) -> list[str]:
        return [p for p, _h, _b in self.requests]


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.server.shutdown()
    s.server.server_close()


def _people(platform: Platform, n: int, channels: Callable[[int], dict[str, str]], **more: Any) -> list[str]:
    store = RecipientStore(platform.engine)
    for i in range(n):
        store.create("011002", {"id": f"p{i}", "name": f"住民{i}", "channels": channels(i), **more})
    return [f"p{i}" for i in range(n)]


def _messages(platform: Platform) -> list[tuple[str, Any, str, int]]:
    t = outbox_table
    with platform.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.key, t.c.payload, t.c.status, t.c.attempts)
                            .where(t.c.kind == KIND).order_by(t.c.id))
        return [(r.key, r.payload, r.status, r.attempts) for r in rows]


def _statuses(notifier: Notifier) -> dict[str, str]:
    return {d.recipient: d.status for d in notifier.deliveries.list("011002", limit=1000)}


def test_a_batch_reaches_a_real_http_server_signed(platform: Platform, sink: Sink,
                                                   make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    notifier.batch_size = 20
    ids = _people(platform, 45, lambda i: {"webhook": f"{sink.url}/hook/{i}"}, webhook_secret=SECRET)
    delivery_ids = notifier.tell(ids, "notify.test", TEST, tenant="011002", urgent=True)
    queued = _messages(platform)
    assert [len(p["deliveries"]) for _k, p, _s, _a in queued] == [20, 20, 5]  # 3 messages, not 45
    assert sorted(i for _k, p, _s, _a in queued for i in p["deliveries"]) == sorted(delivery_ids)
    assert platform.outbox.deliver_due() == 3
    assert sorted(sink.paths()) == sorted(f"/hook/{i}" for i in range(45))
    for _path, headers, body in sink.requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-society5-signature"] == expected
        assert headers["x-society5-delivery"] == json.loads(body)["deliveryId"]
    log = notifier.deliveries.list("011002", limit=100)
    assert {(d.status, d.attempts) for d in log} == {("sent", 1)} and all(d.sent_at for d in log)
    assert {s for _k, _p, s, _a in _messages(platform)} == {"done"}
    # Handled again (a crash before the outbox recorded it): nothing is sent twice.
    assert notifier.outbox.requeue_dead() == 0
    with platform.engine.begin() as conn:
        conn.execute(sa.update(outbox_table).values(status="pending", attempts=0))
    assert platform.outbox.deliver_due() == 3
    assert len(sink.requests) == 45


def test_a_failing_subset_is_retried_alone(platform: Platform, sink: Sink,
                                           make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    ids = _people(platform, 30, lambda i: {"webhook": f"{sink.url}/hook/{i}"})
    sink.failing = {"/hook/3", "/hook/17"}
    notifier.tell(ids, "notify.test", TEST, tenant="011002")
    assert platform.outbox.deliver_due() == 1
    statuses = _statuses(notifier)
    assert {r for r, s in statuses.items() if s == "failed"} == {"p3", "p17"}
    assert {s for r, s in statuses.items() if r not in ("p3", "p17")} == {"sent"}
    failed = notifier.deliveries.list("011002", status="failed")
    assert all(d.attempts == 1 and "500" in (d.last_error or "") for d in failed)
    singles = [(k, a) for k, p, s, a in _messages(platform) if s == "pending"]
    assert sorted(singles) == sorted((d.id, 1) for d in failed)  # one message each, one attempt counted
    sink.failing = set()
    assert platform.outbox.deliver_due() == 2
    assert set(_statuses(notifier).values()) == {"sent"}
    assert sorted(sink.paths()).count("/hook/3") == 2 and len(sink.requests) == 32


def test_a_batch_escalates_refused_and_unreachable_deliveries(
        platform: Platform, sink: Sink, smtp: SmtpServer, make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(**mail_settings(smtp), notify_escalate_after=1)
    ids = _people(platform, 25, lambda i: {"webhook": f"{sink.url}/hook/{i}", "mail": f"p{i}@example.jp"},
                  order=["webhook", "mail"])
    sink.failing = {"/hook/0"}
    notifier.tell(ids, "notify.test", TEST, tenant="011002")
    RecipientStore(platform.engine).update("011002", "p1", {"active": False})
    assert platform.outbox.deliver_due() == 1
    assert platform.outbox.deliver_due() == 1  # the escalated delivery, a message of its own
    by = {(d.recipient, d.channel): d for d in notifier.deliveries.list("011002", limit=100)}
    assert by[("p0", "webhook")].status == "dead" and by[("p0", "mail")].status == "sent"
    assert by[("p0", "mail")].parent == by[("p0", "webhook")].id
    assert by[("p1", "webhook")].status == "dead" and ("p1", "mail") not in by  # deactivated meanwhile
    assert "deactivated" in (by[("p1", "webhook")].last_error or "")
    assert by[("p2", "webhook")].status == "sent" and ("p2", "mail") not in by
    assert [to for _f, to, _m in smtp.box.messages] == [["p0@example.jp"]]


def test_rate_limits_hold_for_a_batch(platform: Platform, sink: Sink,
                                      make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(notify_rate_webhook=10.0)
    still = StillBucket(10.0)  # through the first round, which a slow machine may take long for
    notifier.limits["webhook"] = still.bucket
    ids = _people(platform, 25, lambda i: {"webhook": f"{sink.url}/hook/{i}"})
    notifier.tell(ids, "notify.test", TEST, tenant="011002")
    platform.outbox.deliver_due()
    still.release()
    statuses = sorted(_statuses(notifier).values())
    assert statuses.count("sent") == 10 and statuses.count("deferred") == 15  # a burst of 10, then 10/s
    assert {d.last_error for d in notifier.deliveries.list("011002", status="deferred")} == {
        "webhook rate limit"}
    poll(lambda: platform.outbox.deliver_due() == 0 and len(sink.requests) == 25)
    assert set(_statuses(notifier).values()) == {"sent"}


def test_a_mail_batch_reuses_its_connections(platform: Platform, smtp: SmtpServer,
                                             make_notifier: Callable[..., Notifier],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = make_notifier(**mail_settings(smtp), notify_rate_mail=0)
    opened: list[int] = []
    connect = mail.MailChannel._connect

    def counting(self: mail.MailChannel) -> Any:
        opened.append(1)
        return connect(self)

    monkeypatch.setattr(mail.MailChannel, "_connect", counting)
    notifier.channels["mail"].connections = 1  # type: ignore[attr-defined]
    ids = _people(platform, 40, lambda i: {"mail": f"p{i}@example.jp"})
    smtp.box.refuse = {"p5@example.jp"}
    notifier.tell(ids, "notify.test", TEST, tenant="011002")
    assert platform.outbox.deliver_due() == 1
    assert len(opened) == 1  # one connection sent the other 39 after the refusal
    assert len(smtp.box.messages) == 39
    statuses = _statuses(notifier)
    assert statuses.pop("p5") == "dead" and set(statuses.values()) == {"sent"}
    got = {m["X-Society5-Delivery"] for _f, _t, m in smtp.box.messages}
    assert got == {d.id for d in notifier.deliveries.list("011002", status="sent", limit=100)}


def test_few_deliveries_still_go_one_message_each(platform: Platform, sink: Sink,
                                                  make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    ids = _people(platform, 3, lambda i: {"webhook": f"{sink.url}/hook/{i}"})
    delivered = notifier.tell(ids, "notify.test", TEST, tenant="011002")
    assert [k for k, _p, _s, _a in _messages(platform)] == delivered
