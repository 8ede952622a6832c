"""Region finding: a subject pasted into a scene is found against the camera's empty frame."""

from __future__ import annotations

import numpy as np

from society5.services.bears.vision.regions import (
    Background,
    BackgroundStore,
    Box,
    fallback_regions,
    find_regions,
    merge_boxes,
)

from .conftest import noisy, paste_subject, scene


def _overlap(a: Box, b: Box) -> float:
    ix = max(0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    return ix * iy / b.area


def test_a_small_pasted_subject_is_found() -> None:
    base = scene(1)
    ref = noisy(base, 2)
    frame = noisy(paste_subject(base, 400, 220, 40, 34), 3)
    truth = Box(400, 220, 440, 254)
    background = Background()
    background.add(ref)
    boxes = find_regions(frame, background)
    assert boxes, "nothing found"
    assert _overlap(boxes[0], truth) > 0.8
    assert boxes[0].area < 6 * truth.area


def test_an_empty_frame_gives_no_region_even_with_exposure_drift() -> None:
    base = scene(4)
    background = Background()
    background.add(noisy(base, 5))
    brighter = np.clip(base.astype(np.float32) * 1.08, 0, 255).astype(np.uint8)
    assert find_regions(noisy(brighter, 6), background) == []


def test_a_changed_scene_asks_for_the_fallback() -> None:
    background = Background()
    background.add(scene(7))
    assert find_regions(255 - scene(7), background) is None


def test_background_is_the_median_of_recent_empty_frames() -> None:
    store = BackgroundStore(keep=3)
    base = scene(8)
    for seed in range(3):
        store.add_empty("cam1", noisy(base, seed, 8))
    assert "cam1" in store and "cam2" not in store
    bg = store.get("cam1")
    assert len(bg.frames) == 3
    assert bg.model().shape[1] == bg.config.work_width


def test_fallback_is_overlapping_square_tiles_covering_the_frame() -> None:
    tiles = fallback_regions(1280, 720, tiles_across=3)
    assert len(tiles) == 6
    covered = np.zeros((720, 1280), bool)
    for t in tiles:
        assert t.width == t.height
        covered[t.y0:t.y1, t.x0:t.x1] = True
    assert covered.all()
    assert fallback_regions(1280, 720, tiles_across=0) == [Box(0, 0, 1280, 720)]


def test_nearby_boxes_merge_and_padded_crops_stay_inside() -> None:
    merged = merge_boxes([Box(0, 0, 10, 10), Box(12, 0, 20, 10), Box(100, 100, 110, 110)], gap=5)
    assert sorted(b.as_tuple() for b in merged) == [(0, 0, 20, 10), (100, 100, 110, 110)]
    corner = Box(1270, 700, 1280, 720).padded(0.1, 32, 2.0, 1280, 720)
    assert (corner.width, corner.height) == (32, 32) and corner.x1 == 1280 and corner.y1 == 720
    box = Box(100, 100, 300, 200).padded(0.1, 32, 2.0, 1280, 720)  # 10 % of width / height on each side
    assert box.as_tuple() == (80, 90, 320, 210)
    strip = Box(100, 100, 700, 150).padded(0.0, 32, 2.0, 1280, 720)  # 12:1 widened to 2:1
    assert (strip.width, strip.height) == (600, 300) and strip.y0 == 0
