"""In-process periodic jobs (the embedded default). Jobs must be idempotent: with several server processes
each runs them, so a job claims its work in the database rather than trusting it is alone."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from society5.core.service import Job

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, platform: Any, jobs: Sequence[Job]):
        self.platform = platform
        self.jobs = list(jobs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs: dict[str, int] = {job.name: 0 for job in self.jobs}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="society5-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        due = {job.name: time.monotonic() for job in self.jobs}
        while not self._stop.is_set():
            now = time.monotonic()
            for job in self.jobs:
                if now >= due[job.name]:
                    try:
                        job.run(self.platform)
                    except Exception:  # one failing job must not stop the others
                        log.exception("job %s failed", job.name)
                    self.runs[job.name] += 1
                    due[job.name] = time.monotonic() + job.every.total_seconds()
            wait = max(0.05, min(due.values()) - time.monotonic()) if due else 1.0
            self._stop.wait(min(wait, 1.0))
