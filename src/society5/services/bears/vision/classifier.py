"""Label a camera-trap frame bear / other_animal / person / vehicle / empty, behind a small Protocol.

:class:`Classifier` is what the service calls; :class:`EfficientNetClassifier` is the default: it finds
candidate regions (background difference when the camera has an empty frame, else overlapping square
tiles), classifies a crop of each at the network's input size with EfficientNet-Lite0 (ImageNet weights as
they ship, run in numpy; all crops of a frame in one batch) and sums the ImageNet class
probabilities into the five labels (294–297 are the four bear classes). OpenCV's HOG people detector can
confirm people. A frame is ``bear`` when any crop's bear score reaches ``thresholds.bear``; other labels need
their own thresholds.

Tuned on the validation split of ``scripts/build_bear_eval.py`` (never on test):

* a difference region is cropped *tight* (8 % context per side) and stretched to the square input rather
  than padded to a square: the subject fills the crop, which matters most for small and night subjects;
* the bear score of a crop is P(bear classes) plus ``near_bear_weight`` × P(:data:`NEAR_BEAR_CLASSES`) —
  the classes ImageNet gives bear crops it gets wrong (tusker, elephants, wombat: dark, heavy,
  four-legged) — but only for a region the background difference found whose shape fits a standing animal
  (:meth:`EfficientNetClassifier.animal_shaped`); whole-frame and tile crops count the bear classes only.
  Mustelids (356–362), tried too, lose precision: badgers and martens are real neighbours of bears;
* tried and not kept: several contexts per region and a horizontal flip (max of the bear scores: +1 %
  recall for twice the time), and contrast stretching of greyscale night crops (no gain).

Another model is swapped in by configuration: :func:`load_classifier` takes ``"package.module:factory"``.
:func:`group_bursts` folds the frames one trigger produced into one event.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from society5.services.bears.vision import LABELS
from society5.services.bears.vision.regions import (
    Background,
    Box,
    RegionConfig,
    fallback_regions,
    find_regions,
)

BEAR_CLASSES = (294, 295, 296, 297)  # brown bear, American black bear, ice bear, sloth bear
NEAR_BEAR_CLASSES = (101, 106, 385, 386)  # tusker, wombat, Indian elephant, African elephant
ANIMAL_CLASSES = range(0, 398)  # ImageNet 0-397 are animals (fish to mammals)
PERSON_CLASSES = (
    399, 400, 411, 414, 465, 474, 501, 515, 518, 552, 560, 570, 578, 601, 608, 610, 614, 617, 638, 639, 643,
    652, 655, 689, 697, 735, 775, 808, 834, 841, 842, 869, 981, 982, 983,
)  # clothing, helmets, backpack, gas mask, uniforms, ballplayer, groom, scuba diver
VEHICLE_CLASSES = (
    407, 436, 444, 468, 479, 511, 555, 565, 569, 573, 575, 581, 586, 595, 603, 609, 612, 627, 654, 656, 661,
    665, 670, 671, 675, 705, 717, 734, 751, 757, 779, 803, 817, 829, 847, 864, 866, 867, 870, 874, 880,
)  # cars, trucks, buses, tractors, bicycles, motorbikes, snowplow, tank, grille, car wheel


@dataclass(frozen=True)
class Thresholds:
    """Per-label thresholds on the summed class probabilities of one crop."""

    bear: float = 0.07  # validation split: precision 0.973, recall 0.900 (0.05: .95/.94; 0.10: .99/.85)
    other_animal: float = 0.30
    person: float = 0.25
    vehicle: float = 0.30
    hog_person: float = 0.5  # HOG SVM weight that counts as a person


@dataclass(frozen=True)
class ClassifierConfig:
    thresholds: Thresholds = field(default_factory=Thresholds)
    regions: RegionConfig = field(default_factory=RegionConfig)
    input_size: int = 224  # network input side; smaller is faster and worse
    context: float = 0.08  # added on each side of a difference box, fraction of its width / height
    min_crop: int = 32  # smallest crop side in full-resolution pixels
    max_aspect: float = 2.0  # a crop is widened until its sides differ by at most this factor, then stretched
    near_bear_weight: float = 1.0  # weight of NEAR_BEAR_CLASSES in the bear score of animal-shaped regions
    animal_aspect: tuple[float, float] = (0.6, 3.0)  # width / height of a difference box that fits an animal
    animal_max_height: float = 0.7  # ... and its height at most this fraction of the frame's
    tiles_across: int = 3  # fallback (no reference): this many square tiles across (3: six tiles)
    fallback_input_size: int = 192  # network input side for the tiles, to keep six of them within 200 ms
    use_hog: bool = True  # confirm people with OpenCV's HOG detector on non-bear difference regions


@dataclass(frozen=True)
class Detection:
    """One classified crop: its box in the frame and the five label scores."""

    box: Box
    scores: dict[str, float]

    @property
    def label(self) -> str:
        return max(self.scores, key=lambda k: self.scores[k])


@dataclass(frozen=True)
class Result:
    """The frame's label and confidence, the bear score used for thresholds, and what led there."""

    label: str
    confidence: float
    bear_score: float
    detections: tuple[Detection, ...] = ()
    used_reference: bool = False
    ms: float = 0.0

    @property
    def box(self) -> Box | None:
        """The box that decided the label (the best-scoring crop for it), if any."""
        if not self.detections or self.label == "empty":
            return None
        return max(self.detections, key=lambda d: d.scores.get(self.label, 0.0)).box


@runtime_checkable
class Classifier(Protocol):
    """What the ``bears`` service needs from a model.

    ``image`` is RGB uint8 ``(H, W, 3)``; ``reference`` an earlier empty frame of the same camera (same size)
    or a :class:`Background`, or ``None`` when the camera has none yet.
    """

    def classify(self, image: np.ndarray, reference: np.ndarray | Background | None = None) -> Result: ...


def group_scores(probs: np.ndarray, near_bear_weight: float = 0.0) -> dict[str, float]:
    """Sum ImageNet probabilities ``(1000,)`` into bear / other_animal / person / vehicle; the bear score adds
    ``near_bear_weight`` × P(:data:`NEAR_BEAR_CLASSES`) (capped at 1)."""
    bear = float(probs[list(BEAR_CLASSES)].sum())
    animal = float(probs[ANIMAL_CLASSES.start:ANIMAL_CLASSES.stop].sum()) - bear
    if near_bear_weight:
        bear = min(1.0, bear + near_bear_weight * float(probs[list(NEAR_BEAR_CLASSES)].sum()))
    return {
        "bear": bear,
        "other_animal": max(animal, 0.0),
        "person": float(probs[list(PERSON_CLASSES)].sum()),
        "vehicle": float(probs[list(VEHICLE_CLASSES)].sum()),
    }


def crop_resize(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The box's pixels resized (stretched when the box is not square) to ``size``×``size``."""
    crop = image[box.y0:box.y1, box.x0:box.x1]
    interp = cv2.INTER_AREA if min(crop.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


class EfficientNetClassifier:
    """The default classifier (see the module's docstring). Thread-compatible, not thread-safe."""

    def __init__(self, config: ClassifierConfig | None = None, network: object | None = None) -> None:
        from society5.services.bears.vision.network import EfficientNetLite0

        self.config = config or ClassifierConfig()
        self.network = network if network is not None else EfficientNetLite0.load()
        self._hog: cv2.HOGDescriptor | None = None

    def _probabilities(self, crops: np.ndarray) -> np.ndarray:
        from society5.services.bears.vision.network import preprocess

        probs: np.ndarray = self.network.probabilities(preprocess(crops))  # type: ignore[attr-defined]
        return probs

    def _hog_person(self, crop: np.ndarray) -> float:
        """The HOG people detector's best weight on an unstretched crop, scaled to 128–256 px high."""
        if self._hog is None:
            self._hog = cv2.HOGDescriptor()
            self._hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        target = min(max(grey.shape[0], 128), 256)
        if grey.shape[0] != target:
            grey = cv2.resize(grey, (max(1, grey.shape[1] * target // grey.shape[0]), target))
        _rects, weights = self._hog.detectMultiScale(grey, winStride=(8, 8), scale=1.1)
        return float(np.max(weights)) if len(weights) else 0.0

    def candidate_boxes(self, image: np.ndarray,
                        reference: np.ndarray | Background | None) -> tuple[list[Box], list[float], bool]:
        """Crops to classify (difference regions padded, else square tiles), the near-bear weight of each
        (:meth:`animal_shaped` regions only), and whether a reference decided them."""
        cfg = self.config
        h, w = image.shape[:2]
        regions: list[Box] | None = None
        if reference is not None:
            background = reference
            if not isinstance(reference, Background):
                background = Background(keep=1, config=cfg.regions)
                background.add(reference)
            regions = find_regions(image, background, cfg.regions)
        if regions is None:
            tiles = fallback_regions(w, h, cfg.tiles_across)
            return tiles, [0.0] * len(tiles), False
        near = [cfg.near_bear_weight if self.animal_shaped(b, h) else 0.0 for b in regions]
        return [b.padded(cfg.context, cfg.min_crop, cfg.max_aspect, w, h) for b in regions], near, True

    def animal_shaped(self, box: Box, height: int) -> bool:
        """Whether a difference box (before padding) could hold a standing animal: about square to wide, and
        not most of the frame's height. Only such regions count :data:`NEAR_BEAR_CLASSES`."""
        lo, hi = self.config.animal_aspect
        aspect = box.width / max(box.height, 1)
        return lo <= aspect <= hi and box.height <= self.config.animal_max_height * height

    def classify(self, image: np.ndarray, reference: np.ndarray | Background | None = None) -> Result:
        start = time.perf_counter()
        image = np.ascontiguousarray(image[..., :3])
        if isinstance(reference, np.ndarray) and reference.shape[:2] != image.shape[:2]:
            reference = None  # a reference of another size (camera replaced, setting changed) is no reference
        boxes, near, used_reference = self.candidate_boxes(image, reference)
        if not boxes:
            return Result("empty", 1.0, 0.0, (), used_reference, (time.perf_counter() - start) * 1000)
        size = self.config.input_size if used_reference else self.config.fallback_input_size
        crops = np.stack([crop_resize(image, b, size) for b in boxes])
        probs = self._probabilities(crops)
        th = self.config.thresholds
        hog = self.config.use_hog and used_reference  # on six tiles HOG would cost ~60 ms more
        detections = []
        for box, near_weight, p in zip(boxes, near, probs, strict=True):
            scores = group_scores(p, near_weight)
            if hog and scores["bear"] < th.bear and scores["person"] < th.person:
                weight = self._hog_person(image[box.y0:box.y1, box.x0:box.x1])
                if weight >= th.hog_person:
                    scores["person"] = max(scores["person"], min(1.0, 0.5 + weight / 4))
            detections.append(Detection(box, scores))
        label, confidence = decide(detections, th)
        bear = max(d.scores["bear"] for d in detections)
        return Result(label, confidence, bear, tuple(detections), used_reference,
                      (time.perf_counter() - start) * 1000)


def decide(detections: Sequence[Detection], th: Thresholds) -> tuple[str, float]:
    """Bear wins when any crop reaches its threshold; else the label whose best crop is furthest above its
    threshold; else ``empty`` (confidence: 1 minus the highest label score of any crop)."""
    best = {k: max((d.scores[k] for d in detections), default=0.0) for k in LABELS[:-1]}
    if best["bear"] >= th.bear:
        return "bear", best["bear"]
    limits = {"other_animal": th.other_animal, "person": th.person, "vehicle": th.vehicle}
    over = {k: best[k] / limits[k] for k in limits if best[k] >= limits[k]}
    if over:
        label = max(over, key=lambda k: over[k])
        return label, best[label]
    return "empty", 1.0 - max(best.values())


def load_classifier(spec: str | None = None, config: ClassifierConfig | None = None) -> Classifier:
    """The classifier named by ``spec`` (``"package.module:factory"``, called with ``config=``), or the
    default EfficientNet one. The factory's result must satisfy :class:`Classifier`."""
    if not spec:
        return EfficientNetClassifier(config)
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"classifier spec {spec!r} must look like 'package.module:factory'")
    factory = getattr(importlib.import_module(module_name), attr)
    made = factory(config=config) if config is not None else factory()
    if not isinstance(made, Classifier):
        raise TypeError(f"{spec} did not give a Classifier (an object with classify(image, reference))")
    return made


@dataclass(frozen=True)
class Frame:
    """One classified frame of a camera at a time (input of :func:`group_bursts`)."""

    camera: str
    taken_at: datetime
    result: Result
    name: str = ""


@dataclass
class Event:
    """The frames one trigger produced; its label is the most serious one seen (bear first)."""

    camera: str
    frames: list[Frame]

    @property
    def start(self) -> datetime:
        return self.frames[0].taken_at

    @property
    def end(self) -> datetime:
        return self.frames[-1].taken_at

    @property
    def label(self) -> str:
        labels = {f.result.label for f in self.frames}
        return next((k for k in LABELS if k in labels), "empty")

    @property
    def confidence(self) -> float:
        return max((f.result.confidence for f in self.frames if f.result.label == self.label), default=0.0)

    @property
    def best(self) -> Frame:
        """The frame to show: the most confident one of the event's label."""
        return max(self.frames, key=lambda f: (f.result.label == self.label, f.result.confidence))


def group_bursts(frames: Iterable[Frame], gap: timedelta = timedelta(seconds=30)) -> list[Event]:
    """Frames of one camera less than ``gap`` apart (each from the previous) form one event."""
    events: list[Event] = []
    open_by_camera: dict[str, Event] = {}
    for frame in sorted(frames, key=lambda f: (f.camera, f.taken_at)):
        current = open_by_camera.get(frame.camera)
        if current is not None and frame.taken_at - current.end <= gap:
            current.frames.append(frame)
            continue
        current = Event(frame.camera, [frame])
        open_by_camera[frame.camera] = current
        events.append(current)
    events.sort(key=lambda e: e.start)
    return events


def read_rgb(path: str | Path, max_pixels: int = 40_000_000) -> np.ndarray:
    """An image file as RGB uint8 (EXIF orientation applied); refuses decompression bombs clearly."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if im.width * im.height > max_pixels:
            raise ValueError(f"{path}: {im.width}×{im.height} is larger than {max_pixels} pixels")
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))
