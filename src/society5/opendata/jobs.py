"""Keeping broker-fed datasets fresh: on their schedule, and soon after their entities change.

Changes arrive through the broker's in-process subscriptions (``parts["subscriptions"].subscribe``): one
per publisher, named after it, so the outbox keeps the calls of a restart and each is delivered to one
process after its transaction committed. A burst of updates (a sensor network reporting every few seconds)
must regenerate once, not once per update: each call only marks the publisher in a :class:`Debouncer`,
and the ``opendata_publishers_changed`` job regenerates a publisher once no change came for ``quiet_s``, or
at the latest ``max_wait_s`` after the first change of a burst that does not stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from society5.core.service import Job
from society5.opendata import publishers, upkeep

log = logging.getLogger(__name__)

PART = "opendata.publishers"
# + the publisher id's 32 hex digits: 45 characters, under the 50 an in-process subscriber name may have
SUBSCRIPTION_PREFIX = "opendata.pub."
SYNC_EVERY_S = 30.0  # how often the subscriptions are matched to publishers other processes made or removed


class Debouncer:
    """Publisher ids touched by changes, due once quiet for ``quiet_s`` or ``max_wait_s`` after the first."""

    def __init__(self, quiet_s: float = 5.0, max_wait_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def touch(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            self._first.setdefault(key, now)
            self._last[key] = now

    def pending(self) -> set[str]:
        with self._lock:
            return set(self._first)

    def take_due(self) -> list[str]:
        """The keys due now, forgotten as they are returned (a later change starts a new burst)."""
        now = self.clock()
        with self._lock:
            due = [k for k, first in self._first.items()
                   if now - self._last[k] >= self.quiet_s or now - first >= self.max_wait_s]
            for key in due:
                del self._first[key], self._last[key]
        return due


class Watcher:
    """The in-process subscriptions of one platform's publishers, and the debouncer they feed."""

    def __init__(self, debouncer: Debouncer | None = None):
        self.debouncer = debouncer or Debouncer()
        self.handles: dict[str, tuple[tuple[str, str], Any]] = {}  # publisher id → ((tenant, type), handle)
        self.synced_at = 0.0
        self._lock = threading.Lock()

    def sync(self, platform: Any) -> None:
        """Subscribe to the entities of every publisher, cancel those of publishers that are gone."""
        notifier = platform.parts.get("subscriptions")
        if notifier is None:  # an app without the broker: nothing can change, nothing to watch
            return
        with self._lock:
            self.synced_at = time.monotonic()
            wanted: dict[str, tuple[str, str]] = {}
            for row in publishers.all_rows(platform):
                spec = row["spec"]
                wanted[row["id"]] = (str(spec.get("tenant") or row["tenant"]), str(spec["entity_type"]))
            for pid in list(self.handles):
                if wanted.get(pid) != self.handles[pid][0]:
                    self.handles.pop(pid)[1].cancel()
            for pid, (tenant, etype) in wanted.items():
                if pid in self.handles:
                    continue
                try:
                    handle = notifier.subscribe(
                        SUBSCRIPTION_PREFIX + pid.replace("-", ""), self._callback(pid), tenant=tenant,
                        type=etype, triggers=["entityCreated", "entityUpdated", "entityDeleted"])
                except Exception:  # a broken binding must not stop the others being watched
                    log.exception("cannot watch the entities of publisher %s", pid)
                    continue
                self.handles[pid] = ((tenant, etype), handle)

    def _callback(self, publisher_id: str) -> Callable[[dict[str, Any]], None]:
        return lambda _notification: self.debouncer.touch(publisher_id)

    def stop(self) -> None:
        """Cancel every subscription (server shutdown); the next ``run_changed`` subscribes again."""
        with self._lock:
            for _, handle in self.handles.values():
                handle.cancel()
            self.handles.clear()
            self.synced_at = 0.0


def watcher_of(platform: Any) -> Watcher:
    found: Watcher | None = platform.parts.get(PART)
    if found is None:
        found = platform.parts[PART] = Watcher()
    return found


def run_changed(platform: Any) -> list[str]:
    """Job: regenerate the publishers whose entities changed (debounced); returns their ids."""
    watcher = watcher_of(platform)
    if time.monotonic() - watcher.synced_at >= SYNC_EVERY_S:
        watcher.sync(platform)
    done = []
    for pid in watcher.debouncer.take_due():
        try:
            publishers.regenerate(platform, pid)
            done.append(pid)
        except publishers.NotFoundError:  # deleted meanwhile
            continue
    return done


def run_due(platform: Any) -> list[str]:
    """Job: regenerate the publishers whose schedule has come (each claimed by one process)."""
    done = []
    for pid in publishers.claim_due(platform):
        try:
            publishers.regenerate(platform, pid)
            done.append(pid)
        except publishers.NotFoundError:
            continue
    return done


def on_startup(platform: Any) -> None:
    """Watch the publishers' entities from the start (the broker starts before every other service)."""
    watcher_of(platform).sync(platform)


def background(platform: Any) -> Watcher:
    """While the server serves: the watcher, whose ``stop()`` cancels its subscriptions at shutdown."""
    watcher = watcher_of(platform)
    watcher.sync(platform)
    return watcher


JOBS = (
    Job("opendata_statistics", every=timedelta(minutes=1), run=upkeep.analyze_changed),
    Job("opendata_publishers_changed", every=timedelta(seconds=2), run=run_changed),
    Job("opendata_publishers_due", every=timedelta(minutes=1), run=run_due),
)
