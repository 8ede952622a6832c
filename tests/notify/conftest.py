"""Fixtures of the notify tests: a notifier with fast retries, a real SMTP server, and HTTP stand-ins."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from society5.core.outbox import RetryPolicy
from society5.core.platform import Platform
from society5.notify import startup
from society5.notify.notifier import Notifier
from society5.notify.ratelimit import TokenBucket

LINE_TOKEN = "test-channel-access-token"
LINE_USER = "U" + "1234abcd" * 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(check: Callable[[], Any], timeout_s: float = 30.0, step_s: float = 0.05) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(step_s)


# -- SMTP ----------------------------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps what it receives and can refuse recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.raw: list[bytes] = []  # as it came over the wire
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append(envelope.original_content)
        msg = message_from_bytes(envelope.original_content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 Message accepted"


@dataclass
class SmtpServer:
    port: int
    box: Mailbox
    logins: list[tuple[str, str]] = field(default_factory=list)


def _start_smtp(credentials: tuple[str, str] | None) -> tuple[Controller, SmtpServer]:
    box = Mailbox()
    server = SmtpServer(free_port(), box)
    kwargs: dict[str, Any] = {}
    if credentials is not None:
        def authenticate(_srv: Any, _sess: Any, _env: Any, mechanism: str, data: Any) -> AuthResult:
            if isinstance(data, LoginPassword):
                login = (data.login.decode(), data.password.decode())
                server.logins.append(login)
                return AuthResult(success=login == credentials, handled=False)
            return AuthResult(success=False, handled=False)

        kwargs = {"authenticator": authenticate, "auth_require_tls": False}
    controller = Controller(box, hostname="127.0.0.1", port=server.port, **kwargs)
    controller.start()
    return controller, server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    controller, server = _start_smtp(None)
    yield server
    controller.stop()


@pytest.fixture
def smtp_auth() -> Iterator[SmtpServer]:
    controller, server = _start_smtp(("kita", "s3cret-pass"))
    yield server
    controller.stop()


# -- HTTP stand-ins ------------------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StandIn:
    """A local HTTP server answering scripted responses; ``check`` may veto a request with a reason."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    problems: list[str] = field(default_factory=list)
    check: Callable[[Recorded], str | None] | None = None

    def answer(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"{}") -> None:
        self.script.append((status, headers or {}, body))


def _serve(stand: StandIn) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            rec = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                           self.rfile.read(length))
            stand.requests.append(rec)
            problem = stand.check(rec) if stand.check else None
            headers: dict[str, str]
            if problem:
                stand.problems.append(problem)
                status, headers, body = 400, {}, json.dumps({"message": problem}).encode()
            else:
                status, headers, body = stand.script.popleft() if stand.script else (200, {}, b"{}")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval keeps shutdown() (each test's teardown) quick.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    stand.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


def line_check(rec: Recorded) -> str | None:
    """The request as the LINE Messaging API documents a push message."""
    if rec.method != "POST" or rec.path != "/v2/bot/message/push":
        return f"wrong endpoint {rec.method} {rec.path}"
    if rec.headers.get("authorization") != f"Bearer {LINE_TOKEN}":
        return "Authorization must be 'Bearer <channel access token>'"
    if not rec.headers.get("content-type", "").startswith("application/json"):
        return "Content-Type must be application/json"
    key = rec.headers.get("x-line-retry-key", "")
    try:
        if str(uuid.UUID(key)) != key:
            return "X-Line-Retry-Key must be a UUID in canonical form"
    except ValueError:
        return "X-Line-Retry-Key must be a UUID"
    try:
        body = rec.json()
    except ValueError:
        return "the body is not JSON"
    if set(body) - {"to", "messages", "notificationDisabled", "customAggregationUnits"}:
        return f"unknown properties {sorted(body)}"
    if not isinstance(body.get("to"), str) or not body["to"]:
        return "The property, 'to', in the request body is invalid"
    messages = body.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
        return "messages must hold 1 to 5 message objects"
    for m in messages:
        if m.get("type") != "text" or not isinstance(m.get("text"), str) or not m["text"]:
            return "a text message needs type 'text' and a non-empty text"
        if len(m["text"].encode("utf-16-le")) // 2 > 5000:
            return "Length must be between 0 and 5000"
    return None


@pytest.fixture
def line() -> Iterator[StandIn]:
    stand = StandIn(check=line_check)
    server = _serve(stand)
    yield stand
    server.shutdown()


@pytest.fixture
def hook() -> Iterator[StandIn]:
    stand = StandIn()
    server = _serve(stand)
    yield stand
    server.shutdown()


# -- the notifier --------------------------------------------------------------------------------------------


@pytest.fixture
def make_notifier(platform: Platform) -> Iterator[Callable[..., Notifier]]:
    """``make_notifier(**settings)``: a Notifier on the test platform, retrying at once (4 attempts)."""
    platform.outbox.policy = RetryPolicy(base_s=0.0, max_s=0.0, max_attempts=4)
    built: list[Notifier] = []

    def make(**overrides: Any) -> Notifier:
        values: dict[str, Any] = {"notify_escalate_after": 2}
        values.update(overrides)
        notifier = startup.build(platform.settings.model_copy(update=values), platform.outbox)
        built.append(notifier)
        return notifier

    yield make
    for notifier in built:
        notifier.close()


def mail_settings(server: SmtpServer, **more: Any) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": server.port, "smtp_starttls": False,
            "smtp_from": "society5@town.example.jp", **more}


class StillBucket:
    """A rate limit whose clock stands still until :meth:`release` (then it is the real monotonic clock),
    so that a burst counts as one instant however slowly the machine sends it."""

    def __init__(self, rate: float):
        self._still: float | None = time.monotonic()
        self.bucket = TokenBucket(rate, clock=self._now)

    def _now(self) -> float:
        return self._still if self._still is not None else time.monotonic()

    def release(self) -> None:
        self._still = None

