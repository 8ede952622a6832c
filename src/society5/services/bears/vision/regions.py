"""Where did something appear? Per-camera backgrounds, difference boxes and the whole-frame/tile fallback.

A fixed trail camera sees the same scene all day, so a frame minus the camera's recent empty frames shows
where an animal stands; that region is then classified at full resolution (a small, distant bear is lost
when the whole 1280×720 frame is squeezed to 224 px). The difference is taken on a small blurred copy
(``work_width`` pixels wide), after matching the frame's brightness to the background (exposure changes),
thresholded relative to the frame's own noise, cleaned with a morphological opening and closing, and turned
into boxes by connected components; nearby boxes are merged (the classifier pads each with a little context).

A camera with no empty frame yet gets :func:`fallback_regions`: overlapping square tiles.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """A rectangle in full-resolution pixels (``x1``/``y1`` exclusive) and how strongly it changed."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float = 0.0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    def union(self, other: Box) -> Box:
        return Box(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1),
                   max(self.y1, other.y1), max(self.score, other.score))

    def gap(self, other: Box) -> int:
        """Pixels between the two boxes (0 when they touch or overlap)."""
        dx = max(other.x0 - self.x1, self.x0 - other.x1, 0)
        dy = max(other.y0 - self.y1, self.y0 - other.y1, 0)
        return max(dx, dy)

    def padded(self, context: float, min_side: int, max_aspect: float, width: int, height: int) -> Box:
        """The box grown by ``context`` of its own width and height on every side, each side at least
        ``min_side``, the shorter side widened until the aspect is at most ``max_aspect``, kept inside the
        ``width``×``height`` frame (shifted, not cut, where the frame allows). The classifier stretches this
        crop to the network's square input: a tight box keeps the subject large (see ``ClassifierConfig``)."""
        bw = max(int(self.width * (1.0 + 2 * context)), min_side)
        bh = max(int(self.height * (1.0 + 2 * context)), min_side)
        bw, bh = max(bw, int(bh / max_aspect)), max(bh, int(bw / max_aspect))
        bw, bh = min(bw, width), min(bh, height)
        cx, cy = (self.x0 + self.x1) // 2, (self.y0 + self.y1) // 2
        x0 = min(max(cx - bw // 2, 0), width - bw)
        y0 = min(max(cy - bh // 2, 0), height - bh)
        return Box(x0, y0, x0 + bw, y0 + bh, self.score)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(frozen=True)
class RegionConfig:
    """Tuning of the background difference (tuned on the validation split, see ``bench/bears.py``)."""

    work_width: int = 320  # the difference is computed on a copy this wide
    blur: int = 5  # Gaussian kernel (work pixels) against sensor noise and JPEG blocks
    min_threshold: float = 18.0  # grey levels (0-255) a pixel must change by, at least
    noise_factor: float = 6.0  # ... and at least this many robust standard deviations of the difference
    min_area: float = 0.0004  # smallest component, as a fraction of the frame's area
    merge_gap: float = 0.03  # boxes closer than this fraction of the frame width are merged
    max_regions: int = 3  # the strongest regions classified per frame
    ignore_top: float = 0.0  # fraction of the frame height where the camera prints its data strip ...
    ignore_bottom: float = 0.07  # ... it changes every frame, so it is never a region
    too_much: float = 0.6  # more than this fraction changed: the scene changed (light, snow), use fallback


def _grey_small(rgb: np.ndarray, work_width: int, blur: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = work_width / w
    small = cv2.resize(rgb, (work_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    if blur > 1:
        k = blur | 1
        small = cv2.GaussianBlur(small, (k, k), 0)
    return small


class Background:
    """A camera's background: the per-pixel median of its last ``keep`` empty frames (at work resolution)."""

    def __init__(self, keep: int = 5, config: RegionConfig | None = None) -> None:
        self.config = config or RegionConfig()
        self.frames: collections.deque[np.ndarray] = collections.deque(maxlen=keep)
        self._model: np.ndarray | None = None
        self.size: tuple[int, int] | None = None  # (width, height) of the full frames

    def add(self, rgb: np.ndarray) -> None:
        """Remember an empty frame (a frame classified empty, or a scheduled shot)."""
        size = (rgb.shape[1], rgb.shape[0])
        if self.size is not None and size != self.size:
            self.frames.clear()
        self.size = size
        self.frames.append(_grey_small(rgb, self.config.work_width, self.config.blur))
        self._model = None

    @property
    def ready(self) -> bool:
        return bool(self.frames)

    def model(self) -> np.ndarray:
        if not self.frames:
            raise ValueError("no empty frame of this camera yet")
        if self._model is None:
            stack = np.stack(list(self.frames))
            self._model = stack[0] if len(stack) == 1 else np.median(stack, axis=0).astype(np.float32)
        return self._model


class BackgroundStore:
    """Backgrounds by camera id (in memory; a service may persist the empty frames it feeds in)."""

    def __init__(self, keep: int = 5, config: RegionConfig | None = None) -> None:
        self.keep = keep
        self.config = config or RegionConfig()
        self._by_camera: dict[str, Background] = {}

    def get(self, camera: str) -> Background:
        if camera not in self._by_camera:
            self._by_camera[camera] = Background(self.keep, self.config)
        return self._by_camera[camera]

    def add_empty(self, camera: str, rgb: np.ndarray) -> None:
        self.get(camera).add(rgb)

    def __contains__(self, camera: object) -> bool:
        return camera in self._by_camera and self._by_camera[camera].ready  # type: ignore[index]


def merge_boxes(boxes: Iterable[Box], gap: int) -> list[Box]:
    """Merge boxes that overlap or lie within ``gap`` pixels of each other, until none do."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        out: list[Box] = []
        for box in merged:
            for i, other in enumerate(out):
                if box.gap(other) <= gap:
                    out[i] = other.union(box)
                    changed = True
                    break
            else:
                out.append(box)
        merged = out
    return merged


def difference(rgb: np.ndarray, background: Background | np.ndarray,
               config: RegionConfig | None = None) -> np.ndarray:
    """Per-pixel change (grey levels, largest over the channels) at work resolution, data strips zeroed."""
    config = config or RegionConfig()
    frame = _grey_small(rgb, config.work_width, config.blur)
    ref = background.model() if isinstance(background, Background) else background
    if ref.shape != frame.shape:
        raise ValueError(f"the background ({ref.shape}) and the frame ({frame.shape}) differ in size")
    # match exposure: per channel, scale the frame so its median equals the background's
    med_f = np.median(frame.reshape(-1, frame.shape[-1]), axis=0)
    med_r = np.median(ref.reshape(-1, ref.shape[-1]), axis=0)
    gain = np.clip((med_r + 8.0) / (med_f + 8.0), 0.5, 2.0)
    diff = np.abs(frame * gain - ref).max(axis=-1)
    h = diff.shape[0]
    top, bottom = int(h * config.ignore_top), int(h * config.ignore_bottom)
    if top:
        diff[:top] = 0
    if bottom:
        diff[h - bottom:] = 0
    return diff


def difference_mask(diff: np.ndarray, config: RegionConfig | None = None) -> np.ndarray:
    """The boolean change mask from :func:`difference`: above a noise-relative threshold, cleaned."""
    config = config or RegionConfig()
    med = float(np.median(diff))
    mad = float(np.median(np.abs(diff - med))) * 1.4826
    threshold = max(config.min_threshold, med + config.noise_factor * mad)
    mask = (diff > threshold).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    return mask.astype(bool)


def find_regions(rgb: np.ndarray, background: Background | np.ndarray,
                 config: RegionConfig | None = None) -> list[Box] | None:
    """Boxes (full-resolution pixels) where ``rgb`` differs from the background, strongest first.

    ``[]`` means nothing appeared (an empty frame); ``None`` means the whole scene changed (snow, a moved
    camera, day/night switch) and the difference says nothing: use :func:`fallback_regions`.
    ``background`` is a :class:`Background` or an array from ``Background.model()``.
    """
    config = config or RegionConfig()
    diff = difference(rgb, background, config)
    if (diff > config.min_threshold).mean() > config.too_much:
        return None
    mask = difference_mask(diff, config)
    h, w = rgb.shape[:2]
    scale = w / mask.shape[1]
    count, _labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    min_pixels = config.min_area * mask.size
    boxes = []
    for i in range(1, count):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < min_pixels:
            continue
        boxes.append(Box(int(x * scale), int(y * scale), min(w, int((x + bw) * scale + 0.999)),
                         min(h, int((y + bh) * scale + 0.999)), float(area)))
    boxes = merge_boxes(boxes, int(config.merge_gap * w))
    boxes.sort(key=lambda b: b.score, reverse=True)
    return boxes[: config.max_regions]


def fallback_regions(width: int, height: int, tiles_across: int = 3, overlap: float = 0.25) -> list[Box]:
    """Square tiles overlapping by ``overlap`` (rows as many as the height needs); the whole frame alone
    when ``tiles_across`` is 0. (On the validation split the whole frame squeezed to one crop found no bear
    that the tiles missed, so it is not added to them: one network pass less.)"""
    if tiles_across <= 0:
        return [Box(0, 0, width, height)]
    out: list[Box] = []
    side = min(int(width / (tiles_across - (tiles_across - 1) * overlap)), height)
    step = max(1, int(side * (1 - overlap)))

    def starts(total: int) -> list[int]:
        pos = list(range(0, max(total - side, 0) + 1, step))
        if pos[-1] + side < total:
            pos.append(total - side)
        return pos

    out.extend(Box(x, y, x + side, y + side) for y in starts(height) for x in starts(width))
    return out
