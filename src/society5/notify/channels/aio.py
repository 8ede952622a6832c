"""Many HTTP POSTs at once, for a batch of deliveries (webhook, LINE).

One event loop in a thread of its own (uvloop when installed) serves the whole process, so connections are
reused from one batch to the next and by every outbox worker. Requests are HTTP/1.1 over a keep-alive pool
per host (``h11`` parses the protocol; TLS with the system's CA store for ``https``). At most ``per_host``
requests are in flight to one host, so a receiver is not flooded. A caller's thread blocks until its whole
batch is answered; each request has ``timeout_s`` in all. Redirects are not followed and no proxy is used.

Why not ``httpx.AsyncClient``: its connection pool scans every connection for every queued request, which
made a batch of thousands to one host run at about 200 requests a second.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from urllib.parse import urlsplit

import h11

Request = tuple[str, bytes, dict[str, str]]  # url, body, headers


class Answer:
    """A receiver's answer: what the channels look at (status, headers with lower-case names, text)."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

_IDLE_S = 30.0  # a pooled connection idle longer than this is closed rather than reused
_USER_AGENT = "society5-notify"


class _Conn:
    __slots__ = ("answered", "h11", "idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()
        self.answered = False  # the receiver began answering the request under way

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # already gone
            pass


class _Host:
    def __init__(self, per_host: int):
        self.gate = asyncio.Semaphore(per_host)
        self.idle: deque[_Conn] = deque()


class AsyncPoster:
    def __init__(self, timeout_s: float = 10.0, *, per_host: int = 64):
        self.timeout_s = timeout_s
        self.per_host = per_host
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hosts: dict[tuple[str, str, int], _Host] = {}
        self._ssl: ssl.SSLContext | None = None

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                try:
                    import uvloop

                    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
                except ImportError:
                    loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="society5-notify-http", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def post_many(self, requests: Sequence[Request]) -> list[Answer | Exception]:
        """POST every request; the response or the exception of each, in order."""
        if not requests:
            return []
        future = asyncio.run_coroutine_threadsafe(self._post_all(requests), self._started())
        return future.result()

    async def _post_all(self, requests: Sequence[Request]) -> list[Answer | Exception]:
        return list(await asyncio.gather(*(self._post(*r) for r in requests)))

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer | Exception:
        try:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http(s):// URL")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            key = (parts.scheme, parts.hostname, port)
            host = self._hosts.get(key)
            if host is None:
                if len(self._hosts) > 10_000:  # hosts in use stay referenced by their requests
                    self._close_idle()
                    self._hosts = {}
                host = self._hosts[key] = _Host(self.per_host)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            authority = parts.netloc.rpartition("@")[2]
            async with host.gate:
                async with asyncio.timeout(self.timeout_s):
                    return await self._exchange(host, key, authority, target, body, headers)
        except TimeoutError:
            return TimeoutError(f"no answer from {url} within {self.timeout_s:g} s")
        except Exception as err:  # each request's own outcome; one failure does not stop the batch
            return err

    async def _exchange(self, host: _Host, key: tuple[str, str, int], authority: str, target: str,
                        body: bytes, headers: dict[str, str]) -> Answer:
        while True:
            conn, reused = self._idle(host), True
            if conn is None:
                conn, reused = await self._connect(key), False
            try:
                response = await self._roundtrip(conn, authority, target, body, headers)
            except (ConnectionError, h11.RemoteProtocolError) as err:
                conn.close()
                if reused and not conn.answered:
                    continue  # the receiver had closed the kept-alive connection: once more on a new one
                raise ConnectionError(f"{type(err).__name__}: {err}") from err
            except BaseException:
                conn.close()
                raise
            if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                conn.h11.start_next_cycle()
                conn.idle_since = time.monotonic()
                host.idle.append(conn)
            else:
                conn.close()
            return response

    def _idle(self, host: _Host) -> _Conn | None:
        now = time.monotonic()
        while host.idle:
            conn = host.idle.pop()
            if now - conn.idle_since < _IDLE_S and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple[str, str, int]) -> _Conn:
        scheme, hostname, port = key
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        reader, writer = await asyncio.open_connection(hostname, port, ssl=context, limit=1 << 20)
        return _Conn(reader, writer)

    async def _roundtrip(self, conn: _Conn, authority: str, target: str, body: bytes,
                         headers: dict[str, str]) -> Answer:
        c = conn.h11
        fields = [("Host", authority), ("User-Agent", _USER_AGENT), ("Content-Length", str(len(body))),
                  *headers.items()]
        conn.answered = False
        sent = (c.send(h11.Request(method="POST", target=target, headers=fields)),
                c.send(h11.Data(data=body)), c.send(h11.EndOfMessage()))
        conn.writer.write(b"".join(part for part in sent if part))
        head: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            event = c.next_event()
            if event is h11.NEED_DATA:
                c.receive_data(await conn.reader.read(65536))
            elif isinstance(event, h11.Response):
                head, conn.answered = event, True
            elif isinstance(event, h11.Data):
                if sum(map(len, chunks)) < 65536:  # only the start of an error body is ever shown
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the receiver closed the connection")
        assert head is not None
        # h11 gives header names in lower case
        return Answer(head.status_code, {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
                      b"".join(chunks))

    def _close_idle(self) -> None:
        for host in self._hosts.values():
            while host.idle:
                host.idle.pop().close()

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._close_idle)
        except RuntimeError:  # the loop is already closed
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        self._hosts = {}
