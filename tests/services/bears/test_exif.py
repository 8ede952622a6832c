"""Stored copies carry no EXIF/GPS; thumbnails; the capture time; bad input is refused clearly."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image

from society5.services.bears.vision.exif import BadImage, capture_time, clean_copy, has_metadata, thumbnail


def _jpeg_with_gps(orientation: int = 1) -> bytes:
    im = Image.new("RGB", (64, 32), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "TrailCam Inc"  # Make
    exif[0x0112] = orientation
    exif[0x0132] = "2025:06:01 04:30:00"
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2025:06:01 04:31:02"
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (43.0, 3.0, 30.0)
    out = io.BytesIO()
    im.save(out, format="JPEG", exif=exif, comment=b"owner: Tanaka")
    return out.getvalue()


def test_clean_copy_has_no_exif_or_gps() -> None:
    original = _jpeg_with_gps()
    assert has_metadata(original)
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)
    clean = clean_copy(original)
    assert not has_metadata(clean)
    assert b"TrailCam" not in clean and b"Tanaka" not in clean
    assert Image.open(io.BytesIO(clean)).size == (64, 32)


def test_orientation_is_applied_to_the_pixels() -> None:
    clean = clean_copy(_jpeg_with_gps(orientation=6))  # rotated 90°
    assert Image.open(io.BytesIO(clean)).size == (32, 64)


def test_thumbnail_is_small_and_clean() -> None:
    big = io.BytesIO()
    Image.new("RGB", (1280, 720)).save(big, format="JPEG")
    thumb = thumbnail(big.getvalue(), side=160)
    assert max(Image.open(io.BytesIO(thumb)).size) == 160
    assert not has_metadata(thumb)


def test_capture_time_prefers_datetime_original_in_japan_time() -> None:
    when = capture_time(_jpeg_with_gps())
    assert when == datetime(2025, 6, 1, 4, 31, 2, tzinfo=timezone(timedelta(hours=9)))
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, format="JPEG")
    assert capture_time(plain.getvalue()) is None


@pytest.mark.parametrize("data", [b"not an image", b"\xff\xd8\xff\xe0" + b"\x00" * 50])
def test_bad_images_are_refused(data: bytes) -> None:
    with pytest.raises(BadImage):
        clean_copy(data)
