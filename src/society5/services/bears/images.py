"""The camera-image pipeline: check, store EXIF-free, classify, group bursts, make sightings.

:func:`ingest` takes a camera's (or a drone's) frame from any way in (HTTP upload, the watched folder, MQTT):
everything is checked before anything is written (an image we can read, its size, a plausible capture time,
a known camera), the frame is classified against the camera's background (its latest ``empty`` frame) and
stored with a thumbnail under BEARS_DIR, without any of the camera's metadata. Frames of one camera less
than :data:`BURST_GAP` apart share an ``event_id``; the first of an event whose bear confidence reaches
BEARS_SIGHTING_THRESHOLD makes one unverified ``BearSighting``, later ones only raise its confidence, and
at BEARS_ALERT_THRESHOLD a drone dispatch task is opened too.

Images of people are never public and are deleted (files and row) BEARS_PERSON_RETENTION_H hours later
(:data:`JOBS`). Other images become public only with their sighting's verification (a sightings listener).
:func:`store_photo` keeps a resident's photo the same careful way, without classifying it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from society5.core.errors import BadRequest, NotFound, PayloadTooLarge, Unavailable
from society5.core.service import Job
from society5.core.timeutil import JST, iso, now_iso
from society5.services.bears import cameras, dispatch, geo, models, sightings, tables

log = logging.getLogger(__name__)

BURST_GAP = timedelta(seconds=30)
FORMATS = ("JPEG", "PNG")
INSTALL = ("画像のAI判定には bears 追加パッケージが必要です / camera-image classification needs the bears "
           "extra: pip install 'society5[bears]'")
REFERENCE_CACHE = 8  # decoded backgrounds kept in memory (a 1280×720 frame is 2.7 MB)
_load_lock = threading.Lock()
_classifiers: dict[tuple[str, float | None], tuple[Any, threading.Lock]] = {}
_references: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()
_ref_lock = threading.Lock()
_camera_locks: dict[tuple[str, str], threading.Lock] = {}


# -- the classifier, once per process ----------------------------------------------------------------------
def _one_thread() -> None:
    """One OpenCV and one BLAS thread: the server runs several requests at once, each a single frame."""
    import ctypes

    import cv2

    cv2.setNumThreads(1)
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return
    for path in libs:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                     "openblas_set_num_threads"):
            if hasattr(lib, name):
                getattr(lib, name)(1)
                break


def classifier_of(settings: Any) -> tuple[Any, threading.Lock]:
    """The configured classifier and the lock to hold while it runs (models need not be thread-safe)."""
    spec = settings.bears_classifier or ""
    threshold = settings.bears_sighting_threshold
    key = (spec, threshold)
    found = _classifiers.get(key)
    if found is None:
        with _load_lock:
            found = _classifiers.get(key)
            if found is None:
                try:
                    from society5.services.bears.vision.classifier import (
                        ClassifierConfig,
                        Thresholds,
                        load_classifier,
                    )

                    _one_thread()
                    config = (None if threshold is None
                              else ClassifierConfig(thresholds=Thresholds(bear=threshold)))
                    found = _classifiers[key] = (load_classifier(spec or None, config), threading.Lock())
                except (ImportError, FileNotFoundError) as err:
                    raise Unavailable(f"{INSTALL} ({err})") from err
    return found


def require_vision() -> None:
    """Unavailable (503) unless the ``bears`` extra is installed: callers check before reading uploads."""
    try:
        import cv2  # noqa: F401
        import numpy  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as err:
        raise Unavailable(INSTALL) from err


# -- checking and decoding ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decoded:
    clean: bytes  # the pixels only, re-encoded as JPEG
    thumb: bytes
    width: int
    height: int
    exif_time: datetime | None
    sha256: str


def decode(data: bytes, max_mb: int) -> Decoded:
    """Check an upload, make its EXIF-free copy and thumbnail; BadRequest / PayloadTooLarge name ``file``."""
    require_vision()
    from PIL import Image, UnidentifiedImageError

    from society5.services.bears.vision import exif

    if not data:
        raise BadRequest("file: the file is empty / ファイルが空です")
    if len(data) > max_mb * 2**20:
        raise PayloadTooLarge(f"file: larger than {max_mb} MB / 画像が {max_mb} MB を超えています")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt, (w, h) = probe.format, probe.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadRequest("file: not an image (send a JPEG or PNG) / 画像として読めません") from None
    if fmt not in FORMATS:
        raise BadRequest(f"file: {fmt} images are not taken; send a JPEG or PNG "
                         "/ JPEG か PNG を送ってください")
    if w * h > exif.MAX_PIXELS:
        raise PayloadTooLarge(f"file: {w}×{h} pixels is more than {exif.MAX_PIXELS // 10**6} million "
                              "/ 画素数が多すぎます")
    try:
        clean = exif.clean_copy(data)
        when = exif.capture_time(data)
    except exif.BadImage as err:
        raise BadRequest(f"file: the image is damaged or incomplete ({err}) / 画像が壊れています") from None
    with Image.open(io.BytesIO(clean)) as im:
        size = im.size  # EXIF orientation may have turned it
    return Decoded(clean, exif.thumbnail(clean), size[0], size[1], when,
                   hashlib.sha256(data).hexdigest())


def capture_time(taken_at: datetime | None, exif_time: datetime | None) -> datetime:
    """The frame's time, UTC: ``taken_at`` (no offset = JST) else the EXIF time; checked to be plausible."""
    when = taken_at or exif_time
    field = "taken_at" if taken_at else "taken_at (EXIF DateTimeOriginal)"
    if when is None:
        raise BadRequest("taken_at: the image carries no capture time (EXIF); send taken_at "
                         "/ 画像に撮影日時がありません。taken_at を指定してください")
    if when.tzinfo is None:
        when = when.replace(tzinfo=JST)
    now = datetime.now(UTC)
    if when - now > models.MAX_FUTURE:
        raise BadRequest(f"{field}: {iso(when)} is in the future; check the camera's clock "
                         "/ 撮影日時が未来です。カメラの時計を確認してください")
    if now - when > models.MAX_AGE:
        raise BadRequest(f"{field}: {iso(when)} is more than a year ago; check the camera's clock "
                         "/ 撮影日時が1年以上前です。カメラの時計を確認してください")
    return when.astimezone(UTC)


# -- storage -----------------------------------------------------------------------------------------------
def _root(platform: Any) -> Path:
    return Path(platform.settings.bears_dir)


def _write_files(platform: Any, tenant: str, image_id: str, d: Decoded, when: datetime) -> tuple[str, str]:
    rel = Path(tenant) / f"{when:%Y-%m}"
    folder = _root(platform) / rel
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in ((f"{image_id}.jpg", d.clean), (f"{image_id}_t.jpg", d.thumb)):
        tmp = folder / f".{name}.part"
        tmp.write_bytes(blob)
        tmp.replace(folder / name)  # a reader never sees half a file
    return str(rel / f"{image_id}.jpg"), str(rel / f"{image_id}_t.jpg")


def _remove_files(platform: Any, *paths: str | None) -> None:
    for p in paths:
        if p:
            (_root(platform) / p).unlink(missing_ok=True)


def file_path(platform: Any, row: dict[str, Any], thumb: bool = False) -> Path | None:
    rel = row.get("thumb_path" if thumb else "path")
    return _root(platform) / rel if rel else None


def view(row: Any) -> dict[str, Any]:
    """An image row as the API shows it (never the file paths)."""
    out = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    has_file = bool(out.pop("path", None))
    out.pop("thumb_path", None)
    out["url"] = f"/bears/images/{out['id']}" if has_file else None
    out["thumb_url"] = f"/bears/images/{out['id']}/thumb" if has_file else None
    return out


def _by_sha(conn: Any, tenant: str, sha: str) -> Any:
    t = tables.images
    return conn.execute(sa.select(t).where(t.c.tenant == tenant, t.c.sha256 == sha).limit(1)).first()


def get_row(platform: Any, image_id: str, tenant: str | None = None) -> dict[str, Any]:
    """The stored row (with paths) of an image; ``tenant`` None looks in every tenant (public access)."""
    t = tables.images
    query = sa.select(t).where(t.c.id == image_id)
    if tenant is not None:
        query = query.where(t.c.tenant == tenant)
    with platform.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"no image {image_id!r} / 該当する画像がありません")
    return dict(row._mapping)


def list_images(platform: Any, tenant: str, *, camera_id: str | None = None, label: str | None = None,
                since: datetime | None = None, event_id: str | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
    t = tables.images
    query = sa.select(t).where(t.c.tenant == tenant)
    if camera_id:
        query = query.where(t.c.camera_id == camera_id)
    if label:
        query = query.where(t.c.label == label)
    if since is not None:
        query = query.where(t.c.taken_at >= iso(since))
    if event_id:
        query = query.where(t.c.event_id == event_id)
    with platform.engine.connect() as conn:
        rows = conn.execute(query.order_by(t.c.taken_at.desc()).limit(limit)).all()
    return [view(r) for r in rows]


# -- classification ----------------------------------------------------------------------------------------
def _rgb(jpeg: bytes) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        return np.asarray(im.convert("RGB"))


def _reference(platform: Any, tenant: str, camera_id: str, width: int, height: int) -> Any:
    """The camera's latest stored empty frame of this size, decoded (cached), or None."""
    t = tables.images
    with platform.engine.connect() as conn:
        row = conn.execute(sa.select(t.c.id, t.c.path).where(
            t.c.tenant == tenant, t.c.camera_id == camera_id, t.c.label == "empty", t.c.path.is_not(None),
            t.c.width == width, t.c.height == height).order_by(t.c.taken_at.desc()).limit(1)).first()
    if row is None:
        return None
    key = (tenant, camera_id)
    with _ref_lock:
        hit = _references.get(key)
        if hit is not None and hit[0] == row.id:
            _references.move_to_end(key)
            return hit[1]
    try:
        arr = _rgb((_root(platform) / row.path).read_bytes())
    except OSError:
        log.warning("background frame %s of %s is missing on disk", row.id, camera_id)
        return None
    with _ref_lock:
        _references[key] = (row.id, arr)
        while len(_references) > REFERENCE_CACHE:
            _references.popitem(last=False)
    return arr


def classify(platform: Any, tenant: str, camera_id: str | None, d: Decoded, *, moving: bool) -> Any:
    """The classifier's Result for a frame; a moving camera (drone) has no background."""
    clf, lock = classifier_of(platform.settings)
    rgb = _rgb(d.clean)
    reference = None
    if not moving and camera_id:
        reference = _reference(platform, tenant, camera_id, d.width, d.height)
    with lock:
        return clf.classify(rgb, reference)


# -- ingest ------------------------------------------------------------------------------------------------
def _camera_lock(tenant: str, camera: str) -> threading.Lock:
    with _load_lock:
        return _camera_locks.setdefault((tenant, camera), threading.Lock())


def drone_device_id(tenant: str, drone: str) -> str:
    return f"urn:ngsi-ld:Drone:{tenant}-{drone}"


def ingest(platform: Any, tenant: str, data: bytes, *, camera_id: str | None, source: str,
           taken_at: datetime | None = None, lat: float | None = None, lon: float | None = None,
           battery_level: float | None = None, fallback_time: datetime | None = None) -> dict[str, Any]:
    """Check, classify and store one frame of a camera (``camera_id``: its id or key) or, with
    ``source="drone"``, of a drone at ``lat``/``lon`` (``camera_id``: the drone's name or device id).

    The frame's time is ``taken_at``, else its EXIF time, else ``fallback_time`` (a file's mtime)."""
    settings = platform.settings
    moving = source == "drone"
    if moving:
        if lat is None or lon is None:
            raise BadRequest("lat/lon: a drone frame needs the drone's position / ドローンの位置が必要です")
        try:
            geo.check_location(lat, lon)
        except geo.OutsideHokkaido as err:
            raise BadRequest(f"lat/lon: {err}") from None
        device = camera_id or drone_device_id(tenant, "drone")
        if not device.startswith("urn:"):
            device = drone_device_id(tenant, device)
        camera: dict[str, Any] | None = None
    else:
        if not camera_id:
            raise BadRequest("camera_id: required / カメラを指定してください")
        try:
            camera = cameras.get(platform, tenant, camera_id)
        except NotFound as err:
            raise BadRequest(err.detail) from None
        device, lat, lon = camera["id"], camera["lat"], camera["lon"]
    d = decode(data, settings.bears_max_image_mb)
    when = capture_time(taken_at, d.exif_time or fallback_time)
    with platform.engine.connect() as conn:
        existing = _by_sha(conn, tenant, d.sha256)
    if existing is not None:
        return {**view(existing), "duplicate": True}
    result = classify(platform, tenant, device, d, moving=moving)
    with _camera_lock(tenant, device):
        return _store(platform, tenant, d, result, when=when, device=device, camera=camera, source=source,
                      lat=lat, lon=lon, battery_level=battery_level)


def _event(conn: Any, tenant: str, device: str, when: datetime) -> tuple[str, float, str | None]:
    """The burst this frame belongs to: its id, the best bear confidence so far, and its sighting."""
    t = tables.images
    near = conn.execute(sa.select(t.c.event_id).where(
        t.c.tenant == tenant, t.c.camera_id == device, t.c.event_id.is_not(None),
        t.c.taken_at >= iso(when - BURST_GAP), t.c.taken_at <= iso(when + BURST_GAP)).limit(1)).first()
    if near is None:
        return str(uuid.uuid4()), 0.0, None
    best = conn.execute(sa.select(sa.func.max(t.c.confidence)).where(
        t.c.event_id == near.event_id, t.c.label == "bear")).scalar()
    sighting = conn.execute(sa.select(t.c.sighting_id).where(
        t.c.event_id == near.event_id, t.c.sighting_id.is_not(None)).limit(1)).scalar()
    return near.event_id, float(best or 0.0), sighting


def _store(platform: Any, tenant: str, d: Decoded, result: Any, *, when: datetime, device: str,
           camera: dict[str, Any] | None, source: str, lat: float | None, lon: float | None,
           battery_level: float | None) -> dict[str, Any]:
    settings = platform.settings
    with platform.engine.connect() as conn:
        existing = _by_sha(conn, tenant, d.sha256)  # the same file may have come in twice at once
        if existing is not None:
            return {**view(existing), "duplicate": True}
        event_id, event_best, sighting_id = _event(conn, tenant, device, when)
    image_id = str(uuid.uuid4())
    label, confidence = result.label, float(result.confidence)
    path, thumb = _write_files(platform, tenant, image_id, d, when)
    try:
        made = None
        public = False
        if label == "bear":  # the classifier labels bear at BEARS_SIGHTING_THRESHOLD
            made, public = _sighting_for(platform, tenant, sighting_id, event_best, image_id, when,
                                         confidence, device=device, camera=camera, lat=lat, lon=lon,
                                         drone=source == "drone")
        box = result.box
        row = {
            "id": image_id, "tenant": tenant, "camera_id": device, "source": source[:16],
            "taken_at": iso(when), "received_at": now_iso(), "label": label,
            "confidence": round(confidence, 4), "bear_score": round(float(result.bear_score), 4),
            "box": [box.x0, box.y0, box.x1, box.y1] if box is not None else None, "event_id": event_id,
            "sighting_id": made["id"] if made else None, "path": path, "thumb_path": thumb,
            "width": d.width, "height": d.height, "sha256": d.sha256, "public": public and label != "person",
            "lat": lat, "lon": lon,
            "delete_after": iso(datetime.now(UTC) + timedelta(hours=settings.bears_person_retention_h))
            if label == "person" else None,
        }
        with platform.engine.begin() as conn:
            conn.execute(tables.images.insert().values(**row))
    except Exception:
        _remove_files(platform, path, thumb)
        raise
    if camera is not None:
        try:
            current = cameras.get(platform, tenant, device)  # re-read under the lock: the count goes up
            cameras.record_image(platform, tenant, current, taken_at=when, label=label,
                                 battery_level=battery_level)
        except Exception:  # the frame is stored; the camera's status catches up with the next one
            log.exception("could not update camera %s after image %s", device, image_id)
    if made is not None and source != "drone" and confidence >= settings.bears_alert_threshold:
        try:
            dispatch.open_for_detection(platform, tenant, made, image_id)
        except Exception:
            log.exception("could not open a dispatch task for %s", made["id"])
    log.info("bears image %s from %s: %s %.2f (%s, event %s)", image_id, device, label, confidence,
             "reference" if result.used_reference else "tiles", event_id)
    return view(row)


def _sighting_for(platform: Any, tenant: str, sighting_id: str | None, event_best: float, image_id: str,
                  when: datetime, confidence: float, *, device: str, camera: dict[str, Any] | None,
                  lat: float | None, lon: float | None, drone: bool) -> tuple[dict[str, Any] | None, bool]:
    """Create the event's sighting, or raise its confidence; the sighting (None: left as it was) and whether
    this frame is public (its sighting is verified)."""
    store = sightings.sightings_of(platform)
    if sighting_id is not None:
        if confidence <= event_best:
            return None, False
        store.set_attrs(tenant, sighting_id, {"confidence": round(confidence, 3), "photo": image_id})
        s = store.get(tenant, sighting_id)
        return s, s.get("state") == "verified"
    name = camera["name"] if camera else device.rsplit(":", 1)[-1]
    what = "ドローン" if drone else "カメラ"
    data: dict[str, Any] = {
        "observed_at": when, "lat": lat, "lon": lon, "kind": "sighting", "count": 1,
        "source": "drone" if drone else "camera", "camera_id": device, "confidence": round(confidence, 3),
        "photo": image_id,
        "description": f"{what}「{name}」のAI判定（ヒグマ {confidence:.0%}） / AI detection by "
                       f"{'drone' if drone else 'camera'} {name} (bear {confidence:.0%})",
    }
    if camera:
        for key in ("area_name", "distance_homes_m"):
            if camera.get(key) is not None:
                data[key] = camera[key]
    return store.create(tenant, data, state="unverified"), False


# -- residents' photos -------------------------------------------------------------------------------------
def store_photo(platform: Any, tenant: str, data: bytes, *, source: str = "resident") -> dict[str, Any]:
    """A photo attached to a report: stored EXIF-free with a thumbnail, not classified, not public."""
    d = decode(data, platform.settings.bears_max_image_mb)
    with platform.engine.connect() as conn:
        existing = _by_sha(conn, tenant, d.sha256)
    if existing is not None:
        return {**view(existing), "duplicate": True}
    now = datetime.now(UTC)
    try:
        when = capture_time(None, d.exif_time)
    except BadRequest:  # a phone's missing or wrong clock is no reason to lose the photo
        when = now
    image_id = str(uuid.uuid4())
    path, thumb = _write_files(platform, tenant, image_id, d, when)
    row = {"id": image_id, "tenant": tenant, "camera_id": None, "source": source[:16], "taken_at": iso(when),
           "received_at": iso(now), "path": path, "thumb_path": thumb, "width": d.width, "height": d.height,
           "sha256": d.sha256, "public": False}
    try:
        with platform.engine.begin() as conn:
            conn.execute(tables.images.insert().values(**row))
    except Exception:
        _remove_files(platform, path, thumb)
        raise
    return get_view(platform, image_id)


def get_view(platform: Any, image_id: str) -> dict[str, Any]:
    return view(get_row(platform, image_id))


# -- public flag and retention -----------------------------------------------------------------------------
def _on_sighting(platform: Any, tenant: str, s: dict[str, Any], event: str) -> None:
    """An image is public exactly while its sighting is verified (never an image of people)."""
    if event not in ("created", "verified", "rejected"):
        return
    public = s.get("state") == "verified"
    if event == "created" and not public:
        return
    t = tables.images
    match = t.c.sighting_id == s["id"]
    if s.get("photo"):
        match = sa.or_(match, t.c.id == s["photo"])
    with platform.engine.begin() as conn:
        conn.execute(t.update().where(t.c.tenant == tenant, match, sa.or_(t.c.label.is_(None),
                                                                          t.c.label != "person"))
                     .values(public=public))


if _on_sighting not in sightings.listeners:
    sightings.listeners.append(_on_sighting)


def purge_people(platform: Any) -> int:
    """Delete images of people past their retention: the files and the row. Returns how many."""
    t = tables.images
    with platform.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.path, t.c.thumb_path).where(
            t.c.delete_after.is_not(None), t.c.delete_after <= now_iso()).limit(1000)).all()
    for row in rows:
        _remove_files(platform, row.path, row.thumb_path)
        with platform.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.id == row.id))
    if rows:
        log.info("deleted %d images of people past their retention", len(rows))
    return len(rows)


def parse_time(value: str | None, field: str = "taken_at") -> datetime | None:
    """An ISO 8601 time from a form or a notice (no offset = JST), or None when blank."""
    if value is None or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"{field}: {value!r} is not an ISO 8601 time "
                         "/ 日時の形式が正しくありません") from None
    return when if when.tzinfo else when.replace(tzinfo=JST)


JOBS: tuple[Job, ...] = (Job("bears_purge_person_images", every=timedelta(minutes=10), run=purge_people),)
