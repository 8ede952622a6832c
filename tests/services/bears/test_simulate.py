"""The demo: cameras, past sightings and subscribers loaded once; simulated frames go through the pipeline."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sqlalchemy as sa

from society5.services.bears import demo_content, scenes, simulate, tables
from society5.services.bears.sightings import sightings_of

SAPPORO, SUNAGAWA = demo_content.SAPPORO, demo_content.SUNAGAWA


@pytest.fixture
def demo_platform(bears_platform, tmp_path: Path):  # type: ignore[no-untyped-def]
    bears_platform.settings = bears_platform.settings.model_copy(update={
        "demo": True, "bears_dir": str(tmp_path / "bears"), "opendata_dir": str(tmp_path / "opendata")})
    bears_platform.tenants.ensure(SUNAGAWA, name="砂川市")
    sightings_of(bears_platform)  # what the bears service's start-up does
    return bears_platform


def test_the_demo_content_is_loaded_once(demo_platform) -> None:
    first = demo_content.load(demo_platform)
    assert first["cameras"] == len(demo_content.CAMERAS)
    assert first["sightings"] == len(demo_content.SIGHTINGS)
    assert first["subscribers"] == len(demo_content.SUBSCRIBERS)
    assert first["published"] > 0  # the verified ones, in the open-data catalog
    again = demo_content.load(demo_platform)
    assert again["cameras"] == again["sightings"] == again["subscribers"] == 0

    store = sightings_of(demo_platform)
    sapporo = store.list(SAPPORO, merged=True)
    assert {s["state"] for s in sapporo} == {"verified", "unverified", "rejected"}
    assert {s["source"] for s in sapporo} >= {"staff", "resident", "police"}
    assert all(s["municipality"] == SAPPORO for s in sapporo)
    assert all(s["municipality"] == SUNAGAWA for s in store.list(SUNAGAWA))
    assert any(len(group) == 2 for group in store.proposals(SAPPORO))  # the two close resident reports
    keys = {c["key"] for _, c in simulate.demo_cameras(demo_platform)}
    assert keys == {key for _, key, *_ in demo_content.CAMERAS}

    from society5.notify import notifier_of

    school = notifier_of(demo_platform).recipients.get(SAPPORO, "bears-demo-school-makomanai")
    assert school.channels["mqtt"].startswith("mqtt://127.0.0.1:1883/society5-demo/bears/")
    assert school.channels["mail"].endswith("@example.jp")  # reserved: never a real person


def test_the_hook_does_nothing_outside_the_demo(bears_platform) -> None:
    assert simulate.run(bears_platform) is None


def test_generated_frames_are_the_same_scene_with_or_without_a_subject() -> None:
    import io

    import numpy as np
    from PIL import Image

    from society5.core.timeutil import now_iso, parse_iso

    when = parse_iso(now_iso())

    def frame(subject: str, seed: int) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(simulate.frame_jpeg("moiwa-01", subject, random.Random(seed),
                                                                    when))))

    empty, again, bear = frame("empty", 1), frame("empty", 2), frame("bear", 3)
    assert empty.shape == (720, 1280, 3)
    body = slice(0, 680)  # above the timestamp strip

    def changed(a: np.ndarray, b: np.ndarray) -> float:
        return float((np.abs(a[body].astype(int) - b[body].astype(int)).max(axis=2) > 40).mean())

    assert changed(empty, again) < 0.001  # sensor noise and exposure only: the camera's background
    assert changed(bear, empty) > 0.005  # a bear stands in it


def test_run_posts_a_frame_through_the_pipeline_and_staff_verify_later(demo_platform) -> None:
    demo_content.cameras(demo_platform)
    first = simulate.run(demo_platform)
    assert first is not None and first["image"]["label"] == "empty"  # a camera's first frame: its reference
    st = simulate.state_of(demo_platform)
    assert st.next_image > 0
    with demo_platform.engine.connect() as conn:
        rows = conn.execute(sa.select(tables.images.c.camera_id, tables.images.c.source)).all()
    assert len(rows) == 1 and rows[0].source == "camera"
    assert simulate.run(demo_platform) == {"verified": 0}  # not yet time for the next frame
    st.next_image = 0.0
    second = simulate.run(demo_platform)["image"]  # the next one: another camera still without a reference
    assert second["camera_id"] != first["image"]["camera_id"]

    report = simulate.resident_report(demo_platform, SAPPORO, simulate.demo_cameras(demo_platform)[0][1],
                                      random.Random(4))
    assert report["source"] == "resident" and report["state"] == "unverified"
    st.pending.append((0.0, SAPPORO, report["id"]))
    assert simulate.run(demo_platform)["verified"] == 1
    verified = sightings_of(demo_platform).get(SAPPORO, report["id"])
    assert verified["state"] == "verified" and verified["verified_by"] == simulate.VERIFIER


def test_a_simulated_bear_becomes_a_camera_sighting(demo_platform) -> None:
    assert scenes.have_stamps(), "tasks.py installs Debian's tuxpaint-stamps-default for the tests"
    demo_content.cameras(demo_platform)
    tenant, camera = next((t, c) for t, c in simulate.demo_cameras(demo_platform) if c["key"] == "moiwa-01")
    for seed in (1, 2):
        frame = simulate.post_image(demo_platform, tenant, camera, "empty", random.Random(seed))
        assert frame["label"] == "empty"
    row = simulate.post_image(demo_platform, tenant, camera, "bear", random.Random(1))
    assert row["label"] == "bear" and row["sighting_id"]
    sighting = sightings_of(demo_platform).get(tenant, row["sighting_id"])
    assert sighting["source"] == "camera" and sighting["camera_id"] == camera["id"]
