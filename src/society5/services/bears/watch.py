"""The watched folder: trail cameras that push by FTP or e-mail drop their frames into
``BEARS_WATCH_DIR/<tenant>/<camera key>/``; a poller ingests each file once it is complete.

A file is complete when its size and modification time stayed the same for ``settle_s`` (an FTP upload
grows for a while). It is claimed by renaming it into ``work/`` (atomic: with several processes watching the
same folder only one takes each file), ingested with the EXIF time or else the file's modification time, and
moved to ``done/`` or to ``failed/`` beside a ``.txt`` that says why. Files left in ``work/`` by a process
that died are put back after :data:`STALE_WORK`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from society5.core.errors import ApiError
from society5.services.bears import cameras, images

log = logging.getLogger(__name__)

SUFFIXES = {".jpg", ".jpeg", ".png"}
KEEP = {"done", "failed", "work"}
STALE_WORK = 600.0  # seconds a claimed file may stay in work/ before another poller takes it back


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    n = 1
    while target.exists():
        target = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
        n += 1
    return target


class FolderWatcher:
    """Polls the folder every ``interval`` seconds in a daemon thread; :meth:`scan` is one pass (tests)."""

    def __init__(self, platform: Any, root: str | Path, *, interval: float = 2.0,
                 settle_s: float = 2.0) -> None:
        self.platform = platform
        self.root = Path(root)
        self.interval = interval
        self.settle_s = settle_s
        self.stats = {"done": 0, "failed": 0}
        self._seen: dict[Path, tuple[int, int, float]] = {}  # path → size, mtime_ns, since (monotonic)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()

    def start(self) -> FolderWatcher:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="bears-watch", daemon=True)
        self._thread.start()
        log.info("watching %s for camera images", self.root)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception:  # a bad pass must not end the watcher
                log.exception("scanning %s failed", self.root)
            self._stop.wait(self.interval)

    # -- one pass --------------------------------------------------------------------------------------------
    def scan(self) -> int:
        """Ingest every file that has been complete for ``settle_s``; returns how many were handled."""
        handled = 0
        present: set[Path] = set()
        for tenant_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not self.platform.tenants.exists(tenant_dir.name):
                self._warn_once(tenant_dir.name, "%s is not a tenant (団体コード); its files are left alone",
                                tenant_dir)
                continue
            for camera_dir in sorted(p for p in tenant_dir.iterdir() if p.is_dir()):
                self._recover(camera_dir)
                for path in sorted(camera_dir.iterdir()):
                    if self._stop.is_set():
                        return handled
                    if not path.is_file() or path.name.startswith("."):
                        continue
                    present.add(path)
                    if self._complete(path):
                        self._handle(tenant_dir.name, camera_dir.name, path)
                        handled += 1
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return handled

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def _complete(self, path: Path) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        now = time.monotonic()
        sig = (st.st_size, st.st_mtime_ns)
        seen = self._seen.get(path)
        if seen is None or seen[:2] != sig:
            self._seen[path] = (*sig, now)
            return False
        return now - seen[2] >= self.settle_s

    def _recover(self, camera_dir: Path) -> None:
        work = camera_dir / "work"
        if not work.is_dir():
            return
        for path in work.iterdir():
            try:
                if path.is_file() and time.time() - path.stat().st_mtime > STALE_WORK:
                    path.rename(_free_name(camera_dir, path.name))
            except FileNotFoundError:
                pass  # another poller took it back first

    def _handle(self, tenant: str, key: str, path: Path) -> None:
        self._seen.pop(path, None)
        work = path.parent / "work"
        work.mkdir(exist_ok=True)
        claimed = work / path.name
        try:
            os.rename(path, claimed)  # atomic: the one process whose rename succeeds owns the file
        except FileNotFoundError:
            return
        try:
            reason = self._ingest(tenant, key, claimed)
        except Exception as err:  # an unexpected failure is kept for a person to look at, not retried forever
            log.exception("ingesting %s failed", claimed)
            reason = f"internal error: {err}"
        outcome = "failed" if reason else "done"
        folder = path.parent / outcome
        folder.mkdir(exist_ok=True)
        target = _free_name(folder, path.name)
        claimed.rename(target)
        if reason:
            target.with_name(target.name + ".txt").write_text(reason + "\n", encoding="utf-8")
            log.warning("camera image %s failed: %s", target, reason)
        self.stats[outcome] += 1

    def _ingest(self, tenant: str, key: str, path: Path) -> str | None:
        """None when stored, else why not (Japanese / English)."""
        if path.suffix.lower() not in SUFFIXES:
            return "not a JPEG or PNG file name (.jpg .jpeg .png) / JPEG・PNG のファイルではありません"
        if not cameras.KEY_RE.match(key):
            return f"folder {key!r} is not a camera key / フォルダ名がカメラのキーではありません"
        max_bytes = self.platform.settings.bears_max_image_mb * 2**20
        if path.stat().st_size > max_bytes:
            return f"file: larger than {max_bytes // 2**20} MB / 画像が大きすぎます"
        data = path.read_bytes()
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        try:
            images.ingest(self.platform, tenant, data, camera_id=key, source="folder", fallback_time=mtime)
        except ApiError as err:
            return err.detail
        return None
