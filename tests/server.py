"""Run a real ``society5 serve`` process for tests (crash tests, third-party clients, browsers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

SOCIETY5 = Path(sys.executable).with_name("society5")
CONTEXTS = Path(__file__).resolve().parents[2] / "shared" / "ngsi-ld-contexts"


def wait_until(check: Callable[[], bool], timeout_s: float) -> None:
    """Until ``check()`` holds or the time is up (the assertions after it say what was missing): the crash
    tests act at a point in a stream of writes, however slowly this machine reaches it."""
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, database_url: str, auth: str = "off", env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            SOCIETY5_DATABASE_URL=database_url,
            SOCIETY5_AUTH=auth,
            SOCIETY5_SECRET_KEY="test-secret",
            SOCIETY5_LOG_LEVEL="WARNING",
            **(env or {}),
        )
        if CONTEXTS.exists():
            self.env["SOCIETY5_PRELOAD_CONTEXTS"] = str(CONTEXTS)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> Server:
        self.proc = subprocess.Popen(
            [str(SOCIETY5), "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start in time")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
