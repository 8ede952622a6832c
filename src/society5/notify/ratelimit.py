"""A rate limit per channel: at most ``rate`` messages per second, bursts up to ``capacity``.

A token bucket written as GCRA (a "theoretical arrival time"), with reservations: a message refused now is
given the next free slot and told how long to wait; when it comes back at that slot it passes without
taking another. So a backlog of N messages is deferred once each, to times spread ``1/rate`` apart, instead
of all of them polling the bucket (and the outbox) every ``1/rate`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_EARLY_S = 0.005  # a reserved message coming back this close to its slot is on time
_MAX_HELD = 100_000
# Rounding of the arrival times summed slot by slot: without it the last message of a burst that fills the
# bucket in one instant was told to wait ~1e-16 s (deferred a whole outbox round trip).
_ROUNDING_S = 1e-9


class TokenBucket:
    def __init__(self, rate: float, capacity: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._clock = clock
        self._tat = clock()
        self._held: dict[str, float] = {}  # key → the reserved slot's time
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0.0 when ``key`` may go now; else the seconds until the slot now reserved for it."""
        if self.rate <= 0:
            return 0.0
        interval = 1.0 / self.rate
        with self._lock:
            now = self._clock()
            slot = self._held.pop(key, None)
            if slot is not None:
                if slot - now <= _EARLY_S:
                    return 0.0
                self._held[key] = slot  # came back early (another process's defer, a clock step)
                return slot - now
            tat = max(self._tat, now)
            wait = tat - (self.capacity - 1.0) * interval - now
            self._tat = tat + interval
            if wait <= _ROUNDING_S:
                return 0.0
            if len(self._held) >= _MAX_HELD:  # keys that never came back (handled by another process)
                self._held = {k: v for k, v in self._held.items() if v > now}
            self._held[key] = now + wait
            return wait
