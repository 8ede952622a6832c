"""Stored copies without EXIF/GPS, thumbnails, and the capture time a camera wrote into its EXIF.

Trail cameras write GPS position, serial numbers and owner names into EXIF (and sometimes XMP or comments);
a stored or published copy must carry none of it. :func:`clean_copy` decodes the image, applies the EXIF
orientation to the pixels and re-encodes only the pixels (JPEG, no EXIF, XMP, ICC or comment), so nothing
of the original's metadata can survive.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # larger images are refused (decompression bombs)
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
OFFSET_TIME_ORIGINAL = 0x9011
DATETIME = 0x0132
JST = timezone(timedelta(hours=9))


class BadImage(ValueError):
    """Not an image we can read (not an image, corrupt, or too large)."""


def _open(data: bytes | str | Path) -> Image.Image:
    src = io.BytesIO(data) if isinstance(data, bytes) else Path(data)
    try:
        im = Image.open(src)
        if im.width * im.height > MAX_PIXELS:
            raise BadImage(f"image of {im.width}×{im.height} pixels is larger than {MAX_PIXELS}")
        im.load()
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImage(f"not a readable image: {err}") from err
    return im


def _pixels_only(im: Image.Image) -> Image.Image:
    im = ImageOps.exif_transpose(im)
    rgb = im.convert("RGB")
    bare = Image.new("RGB", rgb.size)
    bare.paste(rgb)
    return bare


def clean_copy(data: bytes | str | Path, quality: int = 90, max_side: int | None = None) -> bytes:
    """JPEG bytes of the image's pixels only (orientation applied), optionally scaled to ``max_side``."""
    bare = _pixels_only(_open(data))
    if max_side and max(bare.size) > max_side:
        bare.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    bare.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def thumbnail(data: bytes | str | Path, side: int = 320, quality: int = 80) -> bytes:
    """A small JPEG (longest side ``side``) without metadata."""
    return clean_copy(data, quality=quality, max_side=side)


def capture_time(data: bytes | str | Path, default_tz: timezone = JST) -> datetime | None:
    """``DateTimeOriginal`` (or ``DateTime``) as an aware datetime; cameras without a zone tag are taken to
    be set to ``default_tz`` (Japan). ``None`` when the image carries no time."""
    im = _open(data)
    exif = im.getexif()
    sub = exif.get_ifd(EXIF_IFD)
    raw = sub.get(DATETIME_ORIGINAL) or exif.get(DATETIME)
    if not raw:
        return None
    try:
        when = datetime.strptime(str(raw).strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = sub.get(OFFSET_TIME_ORIGINAL)
    if offset:
        try:
            stamp = f"{when:%Y-%m-%d %H:%M:%S} {str(offset).strip()}"
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S %z")
        except ValueError:
            pass
    return when.replace(tzinfo=default_tz)


def has_metadata(data: bytes) -> bool:
    """Whether JPEG/PNG bytes still carry EXIF, XMP, a comment or GPS (used by tests and checks)."""
    im = _open(data)
    return bool(im.getexif()) or any(k in im.info for k in ("exif", "xmp", "comment", "XML:com.adobe.xmp"))
