"""Shared fixtures: the network loaded once, small generated trail-camera scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

STAMPS = Path("/usr/share/tuxpaint/stamps")
BEAR_STAMP = STAMPS / "animals/mammals/bears/european-bear.png"


@pytest.fixture(scope="session")
def network():  # type: ignore[no-untyped-def]
    from society5.services.bears.vision.network import EfficientNetLite0

    return EfficientNetLite0.load()


def scene(seed: int, width: int = 640, height: int = 360) -> np.ndarray:
    """A textured outdoor-ish scene: sky, ground, a few trunks (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    horizon = height // 3
    img[:horizon] = (140, 170, 210)
    img[horizon:] = (90, 110, 60)
    img[horizon:] *= 0.8 + 0.4 * rng.random((height - horizon, width, 1))
    for x in rng.integers(0, width - 20, 4):
        img[: int(height * 0.8), x:x + 15] = (70, 50, 35)
    return np.clip(img, 0, 255).astype(np.uint8)


def noisy(img: np.ndarray, seed: int, sigma: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def paste_subject(img: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The bear stamp when Debian's tuxpaint-stamps-default is installed, else a dark drawn animal."""
    out = img.copy()
    if BEAR_STAMP.is_file():
        from PIL import Image

        stamp = Image.open(BEAR_STAMP).convert("RGBA").resize((w, h))
        arr = np.asarray(stamp).astype(np.float32)
        alpha = arr[..., 3:4] / 255
        out[y:y + h, x:x + w] = (out[y:y + h, x:x + w] * (1 - alpha) + arr[..., :3] * alpha).astype(np.uint8)
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        body = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2 <= 1
        out[y:y + h, x:x + w][body] = (60, 40, 25)
    return out


# -- the service in an app -----------------------------------------------------------------------------------
TENANT = "011002"  # 札幌市
OTHER_TENANT = "012106"  # 岩見沢市


@pytest.fixture
def bears_platform(platform):  # type: ignore[no-untyped-def]
    """The platform (SQLite and PostgreSQL) with the broker started and two municipalities as tenants."""
    from society5.broker.service import start

    start(platform)
    platform.tenants.ensure(TENANT, name="札幌市")
    platform.tenants.ensure(OTHER_TENANT, name="岩見沢市")
    return platform


@pytest.fixture
def bears_client(bears_platform):  # type: ignore[no-untyped-def]
    """An in-process client of an app with the broker, notify and bears services (auth off: all allowed)."""
    from fastapi.testclient import TestClient

    from society5.broker.service import service as broker_service
    from society5.notify.service import service as notify_service
    from society5.services.bears.service import service as bears_service
    from society5.web.app import create_app

    app = create_app(bears_platform.settings, services=[broker_service, notify_service, bears_service],
                     platform=bears_platform)
    with TestClient(app) as c:
        yield c
