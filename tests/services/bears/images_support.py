"""Helpers of the image-pipeline tests: generated frames as JPEG bytes, a scripted classifier, a camera."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from PIL import Image

from society5.core.timeutil import JST
from society5.services.bears.vision import LABELS
from society5.services.bears.vision.classifier import Result

from .conftest import noisy, paste_subject, scene

SCRIPTED = "tests.services.bears.images_support:ScriptedClassifier"
CAMERA = {"key": "moiwa-01", "name": "藻岩山麓 1号機", "lat": 43.0236, "lon": 141.3221,
          "area_name": "南区藻岩",
          "distance_homes_m": 150}


def jpeg(arr: np.ndarray, when: datetime | None = None, gps: bool = False, fmt: str = "JPEG") -> bytes:
    """The frame as a file a trail camera would write: EXIF time in JST (as cameras keep it), maybe GPS."""
    exif = Image.Exif()
    if when is not None:
        exif[0x0132] = when.astimezone(JST).strftime("%Y:%m:%d %H:%M:%S")
    if gps:
        exif[0x010F] = "TrailCam Inc"
        g = exif.get_ifd(0x8825)
        g[1], g[2] = "N", (43.0, 1.0, 25.0)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format=fmt, exif=exif, quality=92)
    return out.getvalue()


def background(seed: int = 5) -> np.ndarray:
    return scene(seed, 320, 240)


def empty_frame(n: int, seed: int = 5) -> np.ndarray:
    return noisy(background(seed), 100 + n)


def bear_frame(n: int, seed: int = 5, x: int = 80) -> np.ndarray:
    """A bear (the tuxpaint stamp) walking through the camera's view."""
    return noisy(paste_subject(background(seed), x, 120, 64, 48), 200 + n)


def scripted(label: str, confidence: float, n: int) -> np.ndarray:
    """A frame that tells :class:`ScriptedClassifier` what to answer (a solid block in its corner)."""
    arr = noisy(background(9), 300 + n)
    arr[:32, :32] = (round(confidence * 255), LABELS.index(label) * 50, 0)
    return arr


class ScriptedClassifier:
    """Reads the label and confidence from the corner block: the pipeline's logic tested without a model.
    Like the real one, it labels a bear only at or above its configured bear threshold."""

    def __init__(self, config: Any = None) -> None:
        self.bear_threshold = config.thresholds.bear if config is not None else 0.07

    def classify(self, image: np.ndarray, reference: Any = None) -> Result:
        r, g = (float(v) for v in image[8:24, 8:24].reshape(-1, 3).mean(axis=0)[:2])
        label = LABELS[min(round(g / 50), len(LABELS) - 1)]
        confidence = round(r / 255, 2)
        if label == "bear" and confidence < self.bear_threshold:
            return Result("empty", 1.0 - confidence, confidence, (), reference is not None)
        return Result(label, confidence, confidence if label == "bear" else 0.0, (), reference is not None)


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)
