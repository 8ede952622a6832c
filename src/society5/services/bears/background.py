"""The bears service's background work: the watched folder (BEARS_WATCH_DIR) and MQTT image notices
(MQTT_URL), each started only when configured; :func:`start` returns one object whose ``stop()`` ends both."""

from __future__ import annotations

import logging
from typing import Any

from society5.core.errors import Unavailable

log = logging.getLogger(__name__)


class Background:
    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts

    def stop(self) -> None:
        for part in reversed(self.parts):
            try:
                part.stop()
            except Exception:  # one failing stop must not keep the other running
                log.exception("stopping %r failed", part)


def start(platform: Any) -> Background:
    settings = platform.settings
    if not settings.bears_watch_dir and not settings.mqtt_url:
        return Background([])
    from society5.services.bears import images

    try:
        images.require_vision()
    except Unavailable as err:
        log.error("camera images from the watched folder and MQTT are off: %s", err.detail)
        return Background([])
    parts: list[Any] = []
    if settings.bears_watch_dir:
        from society5.services.bears.watch import FolderWatcher

        parts.append(FolderWatcher(platform, settings.bears_watch_dir).start())
    if settings.mqtt_url:
        from society5.services.bears.mqtt_images import ImageSubscriber

        parts.append(ImageSubscriber(platform).start())
    return Background(parts)
