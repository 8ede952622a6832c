"""The default classifier end to end on generated scenes; the Protocol, thresholds and burst grouping."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from society5.services.bears.vision.classifier import (
    NEAR_BEAR_CLASSES,
    Classifier,
    ClassifierConfig,
    Detection,
    EfficientNetClassifier,
    Frame,
    Result,
    Thresholds,
    decide,
    group_bursts,
    group_scores,
    load_classifier,
)
from society5.services.bears.vision.regions import Box

from .conftest import BEAR_STAMP, noisy, paste_subject, scene


@pytest.fixture(scope="module")
def classifier(network):  # type: ignore[no-untyped-def]
    return EfficientNetClassifier(network=network)


def test_default_classifier_satisfies_the_protocol(classifier: EfficientNetClassifier) -> None:
    assert isinstance(classifier, Classifier)


def test_an_empty_frame_against_its_reference_is_empty(classifier: EfficientNetClassifier) -> None:
    base = scene(11, 1280, 720)
    result = classifier.classify(noisy(base, 1), noisy(base, 2))
    assert result.label == "empty" and result.used_reference and not result.detections


def test_without_reference_tiles_are_classified(classifier: EfficientNetClassifier) -> None:
    result = classifier.classify(scene(12, 1280, 720))
    assert not result.used_reference
    assert len(result.detections) == 6  # 3×2 tiles
    assert result.label in {"bear", "other_animal", "person", "vehicle", "empty"}


@pytest.mark.skipif(not BEAR_STAMP.is_file(), reason="needs Debian's tuxpaint-stamps-default")
def test_a_small_bear_is_found_with_a_reference(classifier: EfficientNetClassifier) -> None:
    base = scene(13, 1280, 720)
    frame = noisy(paste_subject(base, 700, 400, 150, 128), 3)
    result = classifier.classify(frame, noisy(base, 4))
    assert result.label == "bear", result
    assert result.box is not None and result.box.x0 <= 700 and result.box.x1 >= 850


def test_decide_puts_bear_first_and_respects_thresholds() -> None:
    th = Thresholds(bear=0.3, other_animal=0.3, person=0.3, vehicle=0.3)
    box = Box(0, 0, 1, 1)
    dets = [Detection(box, {"bear": 0.31, "other_animal": 0.6, "person": 0.0, "vehicle": 0.0})]
    assert decide(dets, th)[0] == "bear"
    dets = [Detection(box, {"bear": 0.1, "other_animal": 0.2, "person": 0.05, "vehicle": 0.5})]
    assert decide(dets, th) == ("vehicle", 0.5)
    dets = [Detection(box, {"bear": 0.1, "other_animal": 0.2, "person": 0.05, "vehicle": 0.1})]
    label, confidence = decide(dets, th)
    assert label == "empty" and confidence == pytest.approx(0.8)


def test_near_bear_classes_count_only_with_their_weight() -> None:
    probs = np.zeros(1000, np.float32)
    probs[294], probs[NEAR_BEAR_CLASSES[0]], probs[362] = 0.05, 0.2, 0.5  # brown bear, tusker, badger
    assert group_scores(probs)["bear"] == pytest.approx(0.05)
    assert group_scores(probs, near_bear_weight=0.5)["bear"] == pytest.approx(0.15)
    assert group_scores(probs)["other_animal"] == pytest.approx(0.7)


def test_only_animal_shaped_difference_regions_get_the_near_bear_weight(
        classifier: EfficientNetClassifier) -> None:
    assert classifier.animal_shaped(Box(0, 0, 150, 100), 720)  # a bear from the side
    assert not classifier.animal_shaped(Box(0, 0, 60, 180), 720)  # a standing person
    assert not classifier.animal_shaped(Box(0, 0, 900, 600), 720)  # most of the frame
    base = scene(14, 1280, 720)
    frame = noisy(paste_subject(base, 500, 300, 150, 100), 5)
    _, near, used = classifier.candidate_boxes(frame, noisy(base, 6))
    assert used and near and near[0] == classifier.config.near_bear_weight
    _, near, used = classifier.candidate_boxes(frame, None)
    assert not used and set(near) == {0.0}


def _frame(camera: str, second: int, label: str, confidence: float = 0.9) -> Frame:
    return Frame(camera, datetime(2025, 6, 1, 5, 0, 0) + timedelta(seconds=second),
                 Result(label, confidence, confidence if label == "bear" else 0.0))


def test_a_burst_is_one_event_and_its_label_is_the_most_serious() -> None:
    frames = [_frame("a", 0, "other_animal"), _frame("a", 2, "bear", 0.7), _frame("a", 4, "empty"),
              _frame("a", 300, "empty"), _frame("b", 1, "person")]
    events = group_bursts(frames, gap=timedelta(seconds=30))
    assert [(e.camera, len(e.frames), e.label) for e in events] == [
        ("a", 3, "bear"), ("b", 1, "person"), ("a", 1, "empty")]
    assert events[0].best.result.confidence == 0.7


class _Always:
    def __init__(self, config: ClassifierConfig | None = None) -> None:
        self.config = config

    def classify(self, image: np.ndarray, reference: object = None) -> Result:
        return Result("bear", 1.0, 1.0)


def make_always(config: ClassifierConfig | None = None) -> _Always:
    return _Always(config)


def test_another_classifier_is_chosen_by_configuration() -> None:
    chosen = load_classifier(f"{__name__}:make_always")
    assert chosen.classify(np.zeros((4, 4, 3), np.uint8)).label == "bear"
    with pytest.raises(ValueError):
        load_classifier("no_colon_here")
    with pytest.raises(TypeError):
        load_classifier("datetime:date", config=None)
