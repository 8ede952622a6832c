"""The camera-image pipeline: checks, EXIF-free storage, bursts, sightings, dispatches, privacy, retention."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from society5.core.errors import ApiError, BadRequest, PayloadTooLarge
from society5.services.bears import cameras, dispatch, images, tables
from society5.services.bears.sightings import sightings_of
from society5.services.bears.vision.exif import has_metadata

from .conftest import TENANT
from .images_support import CAMERA, SCRIPTED, ago, bear_frame, empty_frame, jpeg, scripted


@pytest.fixture
def plat(bears_platform, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bears_platform.settings, "bears_dir", str(tmp_path / "bears"))
    cameras.create(bears_platform, TENANT, CAMERA)
    return bears_platform


@pytest.fixture
def scripted_plat(plat, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(plat.settings, "bears_classifier", SCRIPTED)
    monkeypatch.setattr(plat.settings, "bears_sighting_threshold", 0.5)
    monkeypatch.setattr(plat.settings, "bears_alert_threshold", 0.85)
    return plat


def _rows(platform) -> list[dict]:  # type: ignore[no-untyped-def]
    with platform.engine.connect() as conn:
        rows = conn.execute(sa.select(tables.images).order_by(tables.images.c.taken_at))
        return [dict(r._mapping) for r in rows]


def _files(platform) -> list[Path]:  # type: ignore[no-untyped-def]
    root = Path(platform.settings.bears_dir)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_bear_walking_past_a_camera_makes_one_sighting_and_a_dispatch(plat) -> None:  # type: ignore[no-untyped-def]
    first = images.ingest(plat, TENANT, jpeg(empty_frame(1), ago(600), gps=True), camera_id="moiwa-01",
                          source="upload")
    assert first["label"] == "empty" and first["sighting_id"] is None
    bear = images.ingest(plat, TENANT, jpeg(bear_frame(1), ago(50)), camera_id="moiwa-01", source="upload")
    # Against the camera's background the small bear is found and is sure enough to alert.
    assert bear["label"] == "bear" and bear["confidence"] >= plat.settings.bears_alert_threshold, bear
    assert bear["box"] is not None and bear["event_id"] != first["event_id"]
    again = images.ingest(plat, TENANT, jpeg(bear_frame(2, x=100), ago(40)), camera_id="moiwa-01",
                          source="upload")
    assert again["event_id"] == bear["event_id"]

    found = sightings_of(plat).list(TENANT)
    assert len(found) == 1
    s = found[0]
    assert s["id"] == bear["sighting_id"] and s["source"] == "camera" and s["state"] == "unverified"
    assert s["camera_id"] == cameras.entity_id(TENANT, "moiwa-01")
    assert (s["lat"], s["lon"]) == (CAMERA["lat"], CAMERA["lon"]) and s["area_name"] == "南区藻岩"
    assert s["confidence"] >= bear["confidence"] - 1e-3 and s["photo"] in (bear["id"], again["id"])

    tasks = dispatch.list_dispatches(plat, TENANT)
    assert len(tasks) == 1 and tasks[0]["sighting_id"] == s["id"] and tasks[0]["created_by"] == "auto"
    cam = cameras.get(plat, TENANT, "moiwa-01")
    assert cam["image_count"] == 3 and cam["last_label"] == "bear" and cam["status"] == "active"

    # Stored copies carry none of the camera's EXIF/GPS, and nothing of the files is public yet.
    rows = _rows(plat)
    assert all(not r["public"] for r in rows)
    stored = (Path(plat.settings.bears_dir) / rows[0]["path"]).read_bytes()
    assert not has_metadata(stored) and b"TrailCam" not in stored
    thumb = Image.open(Path(plat.settings.bears_dir) / rows[0]["thumb_path"])
    assert max(thumb.size) <= 320


def test_later_frames_of_an_event_only_raise_its_confidence(scripted_plat) -> None:  # type: ignore[no-untyped-def]
    p = scripted_plat
    low = images.ingest(p, TENANT, jpeg(scripted("bear", 0.3, 1)), camera_id="moiwa-01", source="upload",
                        taken_at=ago(100))
    assert low["label"] == "empty" and low["sighting_id"] is None  # under BEARS_SIGHTING_THRESHOLD
    made = images.ingest(p, TENANT, jpeg(scripted("bear", 0.6, 2)), camera_id="moiwa-01", source="upload",
                         taken_at=ago(80))
    assert made["sighting_id"] and made["event_id"] == low["event_id"]
    lower = images.ingest(p, TENANT, jpeg(scripted("bear", 0.55, 3)), camera_id="moiwa-01", source="upload",
                          taken_at=ago(60))
    higher = images.ingest(p, TENANT, jpeg(scripted("bear", 0.8, 4)), camera_id="moiwa-01", source="upload",
                           taken_at=ago(40))
    assert lower["sighting_id"] is None and higher["sighting_id"] == made["sighting_id"]
    s = sightings_of(p).get(TENANT, made["sighting_id"])
    assert s["confidence"] == pytest.approx(0.8, abs=0.02) and s["photo"] == higher["id"]
    assert len(sightings_of(p).list(TENANT)) == 1
    assert dispatch.list_dispatches(p, TENANT) == []  # never reached BEARS_ALERT_THRESHOLD
    # 31 s after the last frame a new trigger starts a new event, and a new sighting.
    other = images.ingest(p, TENANT, jpeg(scripted("bear", 0.7, 5)), camera_id="moiwa-01", source="upload",
                          taken_at=ago(9))
    assert other["event_id"] != made["event_id"] and other["sighting_id"] not in (None, made["sighting_id"])


def test_bad_images_are_refused_and_nothing_is_stored(plat, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    good = jpeg(empty_frame(1), ago(60))
    cases: list[tuple[bytes, dict, type[ApiError], str]] = [
        (b"", {}, BadRequest, "file:"),
        (b"%PDF-1.4 not an image", {}, BadRequest, "file:"),
        (good[: len(good) // 2], {}, BadRequest, "file:"),  # cut off in transfer
        (jpeg(empty_frame(2), fmt="GIF"), {}, BadRequest, "GIF"),
        (jpeg(empty_frame(3)), {}, BadRequest, "taken_at:"),  # no EXIF time, none given
        (good, {"taken_at": ago(-3600)}, BadRequest, "future"),
        (jpeg(empty_frame(4), ago(400 * 86400)), {}, BadRequest, "year"),
        (good, {"camera_id": "nope"}, BadRequest, "camera_id:"),
        (good, {"camera_id": None}, BadRequest, "camera_id:"),
        (good, {"source": "drone", "camera_id": "d1"}, BadRequest, "lat/lon:"),
        (good, {"source": "drone", "camera_id": "d1", "lat": 35.68, "lon": 139.76}, BadRequest, "lat/lon:"),
    ]
    huge = io.BytesIO()
    Image.new("L", (8000, 6000)).save(huge, format="PNG")  # 48 Mpx, a few kB
    cases.append((huge.getvalue(), {}, PayloadTooLarge, "pixels"))
    for data, kwargs, err, text in cases:
        args = {"camera_id": "moiwa-01", "source": "upload", **kwargs}
        with pytest.raises(err) as info:
            images.ingest(plat, TENANT, data, **args)
        assert text in info.value.detail and "/" in info.value.detail, info.value.detail
    monkeypatch.setattr(plat.settings, "bears_max_image_mb", 1)
    with pytest.raises(PayloadTooLarge, match="file:"):
        images.ingest(plat, TENANT, good + b"\0" * 2**20, camera_id="moiwa-01", source="upload")
    assert _rows(plat) == [] and _files(plat) == []
    assert sightings_of(plat).list(TENANT) == []


def test_a_duplicate_upload_returns_the_stored_image(scripted_plat) -> None:  # type: ignore[no-untyped-def]
    data = jpeg(scripted("empty", 0.9, 1), ago(30))
    first = images.ingest(scripted_plat, TENANT, data, camera_id="moiwa-01", source="upload")
    again = images.ingest(scripted_plat, TENANT, data, camera_id=cameras.entity_id(TENANT, "moiwa-01"),
                          source="folder")
    assert again["id"] == first["id"] and again["duplicate"] and len(_rows(scripted_plat)) == 1


def test_images_of_people_are_never_public_and_are_deleted(scripted_plat) -> None:  # type: ignore[no-untyped-def]
    p = scripted_plat
    person = images.ingest(p, TENANT, jpeg(scripted("person", 0.9, 1), ago(30)), camera_id="moiwa-01",
                           source="upload")
    assert person["label"] == "person" and person["delete_after"] > person["received_at"]
    keep = images.ingest(p, TENANT, jpeg(scripted("other_animal", 0.9, 2), ago(10)), camera_id="moiwa-01",
                         source="upload")
    assert images.purge_people(p) == 0  # not yet due
    with p.engine.begin() as conn:
        conn.execute(tables.images.update().where(tables.images.c.id == person["id"])
                     .values(delete_after="2000-01-01T00:00:00.000000Z"))
    assert images.purge_people(p) == 1
    assert [r["id"] for r in _rows(p)] == [keep["id"]]
    assert len(_files(p)) == 2  # the other frame and its thumbnail


def test_a_residents_photo_is_public_only_while_its_sighting_is_verified(plat) -> None:  # type: ignore[no-untyped-def]
    photo = images.store_photo(plat, TENANT, jpeg(bear_frame(9), ago(300), gps=True))
    assert photo["label"] is None and not photo["public"] and photo["source"] == "resident"
    store = sightings_of(plat)
    s = store.create(TENANT, {"observed_at": ago(300), "lat": 43.06, "lon": 141.35, "source": "resident",
                              "photo": photo["id"]})
    assert not images.get_row(plat, photo["id"])["public"]
    store.set_state(TENANT, s["id"], "verified", "staff")
    assert images.get_row(plat, photo["id"])["public"]
    store.set_state(TENANT, s["id"], "rejected", "staff")
    assert not images.get_row(plat, photo["id"])["public"]
    with pytest.raises(BadRequest, match="file:"):
        images.store_photo(plat, TENANT, b"not a photo")


def test_a_drone_frame_makes_a_drone_sighting_where_the_drone_was(scripted_plat) -> None:  # type: ignore[no-untyped-def]
    out = images.ingest(scripted_plat, TENANT, jpeg(scripted("bear", 0.95, 1), ago(20)), camera_id="survey-2",
                        source="drone", lat=43.05, lon=141.30)
    s = sightings_of(scripted_plat).get(TENANT, out["sighting_id"])
    assert s["source"] == "drone" and (s["lat"], s["lon"]) == (43.05, 141.30)
    assert s["camera_id"] == images.drone_device_id(TENANT, "survey-2")
    assert dispatch.list_dispatches(scripted_plat, TENANT) == []  # a drone is already there


def test_without_the_bears_extra_the_pipeline_is_unavailable(plat, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)
    with pytest.raises(ApiError) as info:
        images.ingest(plat, TENANT, jpeg(empty_frame(1), ago(5)), camera_id="moiwa-01", source="upload")
    assert info.value.status == 503 and "society5[bears]" in info.value.detail
