"""The demo's live bears (``society5 demo``): camera frames now and then, residents' reports, staff verifying.

The platform's demo job calls :func:`run` every few seconds; it paces itself: one frame every 30–60 s from
one of the demo cameras (``demo_content.CAMERAS``), through the real pipeline (``images.ingest``: EXIF-free
copy, classification against the camera's earlier empty frames, a sighting when it sees a bear). Frames are
generated trail-camera scenes (``scenes``): the same scene per camera, so the background model works; a
bear or another animal (エゾシカ, キタキツネ …) is pasted in from Debian's ``tuxpaint-stamps-default`` photos
when the package is installed, else the frame stays empty. A camera's first frame is empty (its
reference); those come first, a few seconds apart. Every 5–10 minutes a resident reports a bear near a
camera; a share of the new sightings is verified by "staff" a minute or two later, so alerts go out and the
map fills.

CPU: about 0.2 s to draw a 1280×720 frame and 0.1–0.3 s to classify it, every 30–60 s.
"""

from __future__ import annotations

import io
import logging
import math
import random
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from society5.core.errors import ApiError
from society5.core.timeutil import JST
from society5.services.bears.sightings import sightings_of

log = logging.getLogger(__name__)

IMAGE_EVERY_S = (30.0, 60.0)
REPORT_EVERY_S = (300.0, 600.0)
VERIFY_AFTER_S = (60.0, 180.0)
VERIFY_SHARE = 0.5  # of camera and resident sightings, verified by the simulated staff
SUBJECTS = (("bear", 0.3), ("animal", 0.25), ("empty", 0.45))
REFERENCE_FRAMES = 1  # a camera's first frame is empty: the pipeline's background for it
WARM_UP_EVERY_S = 8.0  # between those first frames
HOKKAIDO_ANIMALS = ("deer", "fox", "hare", "rodent", "bird", "dog")
VERIFIER = "デモ職員（自動確認）"
_PART = "bears.simulate"


@dataclass
class State:
    rng: random.Random = field(default_factory=random.Random)
    next_image: float = 0.0  # time.monotonic(): the first frame goes at once
    next_report: float = field(default_factory=lambda: time.monotonic() + 120.0)
    pending: list[tuple[float, str, str]] = field(default_factory=list)  # (due, tenant, sighting id)
    images_off: bool = False


def state_of(platform: Any) -> State:
    found: State | None = platform.parts.get(_PART)
    if found is None:
        found = platform.parts[_PART] = State()
    return found


def demo_cameras(platform: Any) -> list[tuple[str, dict[str, Any]]]:
    """(tenant, camera) of the demo's cameras that exist on this platform."""
    from society5.services.bears import cameras, demo_content

    keys = {(t, key) for t, key, *_ in demo_content.CAMERAS}
    found = []
    for tenant in demo_content.TENANTS:
        found += [(tenant, c) for c in cameras.list_cameras(platform, tenant)
                  if (tenant, c.get("key")) in keys]
    return found


def pick_subject(rng: random.Random) -> str:
    from society5.services.bears import scenes

    if not scenes.have_stamps():
        return "empty"
    roll, total = rng.random(), 0.0
    for subject, share in SUBJECTS:
        total += share
        if roll < total:
            return subject
    return "empty"


def frame_jpeg(key: str, subject: str, rng: random.Random, when: datetime) -> bytes:
    """A 1280×720 JPEG of camera ``key``'s scene with ``subject`` (bear | animal | empty) in it."""
    import numpy as np
    from PIL import Image

    from society5.services.bears import scenes

    cam = scenes.make_camera(zlib.crc32(key.encode()), key)
    frame = cam.background.copy()
    if subject != "empty" and scenes.have_stamps():
        kind = rng.choice(HOKKAIDO_ANIMALS)
        stamp = rng.choice(scenes.BEARS) if subject == "bear" else rng.choice(scenes.ANIMALS[kind])
        height = int(scenes.HEIGHT * rng.uniform(0.18, 0.4))
        if subject != "bear" and kind in ("hare", "rodent", "bird"):
            height //= 2
        low = max(cam.horizon + height // 3, int(scenes.HEIGHT * 0.55))
        y_feet = rng.randint(low, max(low, int(scenes.HEIGHT * 0.92)))
        x = rng.randint(int(scenes.WIDTH * 0.15), int(scenes.WIDTH * 0.85))
        scenes.paste(frame, scenes.load_stamp(stamp, rng), x, y_feet, height, rng, cam.night)
    rgb = scenes.finish(frame, cam, rng, when.astimezone(JST), rng.uniform(0.96, 1.04))
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(out, format="JPEG", quality=85)
    return out.getvalue()


def post_image(platform: Any, tenant: str, camera: dict[str, Any], subject: str,
               rng: random.Random | None = None) -> dict[str, Any]:
    """Send one generated frame of ``camera`` through the image pipeline; returns the pipeline's row."""
    from society5.services.bears import images

    rng = rng or random.Random()
    now = datetime.now(UTC)
    data = frame_jpeg(camera["key"], subject, rng, now)
    row: dict[str, Any] = images.ingest(platform, tenant, data, camera_id=camera["id"], source="camera",
                                        taken_at=now)
    log.info("demo camera %s: %s frame → %s (%.2f) sighting %s", camera["key"], subject, row.get("label"),
             row.get("confidence") or 0.0, row.get("sighting_id") or "-")
    return row


def resident_report(platform: Any, tenant: str, camera: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A resident's report of a bear a few hundred metres from ``camera``."""
    metres, angle = rng.uniform(150, 800), rng.uniform(0, 2 * math.pi)
    lat = camera["lat"] + metres * math.sin(angle) / 111_000
    lon = camera["lon"] + metres * math.cos(angle) / (111_000 * math.cos(math.radians(camera["lat"])))
    data = {"observed_at": (datetime.now(UTC) - timedelta(minutes=rng.uniform(3, 30))).isoformat(),
            "lat": round(lat, 6), "lon": round(lon, 6), "source": "resident",
            "area_name": f"{camera.get('area_name') or camera['name']} 付近",
            "behaviour": rng.choice(("passing", "passing", "staying", "feeding", "fleeing")),
            "direction": rng.choice(("N", "E", "S", "W", "unknown")),
            "description": "住民からの通報（デモのシミュレーション）"}
    return sightings_of(platform).create(tenant, data)


def verify_due(platform: Any, st: State, now: float) -> int:
    """The simulated staff verify the sightings whose turn has come."""
    due = [p for p in st.pending if p[0] <= now]
    st.pending = [p for p in st.pending if p[0] > now]
    store = sightings_of(platform)
    for _, tenant, sid in due:
        try:
            if store.get(tenant, sid)["state"] == "unverified":
                store.set_state(tenant, sid, "verified", VERIFIER)
                log.info("demo: staff verified %s", sid)
        except ApiError as err:  # merged, deleted or rejected by a person meanwhile
            log.info("demo: %s not verified: %s", sid, err)
    return len(due)


def _maybe_verify(st: State, tenant: str, sighting_id: str | None, now: float) -> None:
    if sighting_id and st.rng.random() < VERIFY_SHARE:
        st.pending.append((now + st.rng.uniform(*VERIFY_AFTER_S), tenant, sighting_id))


def run(platform: Any) -> dict[str, Any] | None:
    """The service's ``simulate`` hook: what this call did, or None when the demo is off or not loaded."""
    if not platform.settings.demo or not {"broker", "bears.sightings"} <= platform.parts.keys():
        return None  # not the demo, or the bears service is not part of this app
    st = state_of(platform)
    now = time.monotonic()
    did: dict[str, Any] = {"verified": verify_due(platform, st, now)}
    if now < st.next_image and now < st.next_report:
        return did
    cams = demo_cameras(platform)
    if not cams:
        return did
    if now >= st.next_image and not st.images_off:
        # Cameras without a reference frame first, in quick succession: bears can appear within a minute.
        warming = [c for c in cams if int(c[1].get("image_count") or 0) < REFERENCE_FRAMES]
        st.next_image = now + (WARM_UP_EVERY_S if warming else st.rng.uniform(*IMAGE_EVERY_S))
        tenant, camera = st.rng.choice(warming or cams)
        subject = "empty" if warming else pick_subject(st.rng)
        try:
            row = post_image(platform, tenant, camera, subject, st.rng)
        except ImportError as err:  # the bears extra (numpy, OpenCV, Pillow) is not installed
            st.images_off = True
            log.warning("demo camera images are off: %s (pip install 'society5[bears]')", err)
        except ApiError as err:
            log.warning("demo camera %s: frame refused: %s", camera["key"], err)
        else:
            did["image"] = row
            _maybe_verify(st, tenant, row.get("sighting_id"), now)
    if now >= st.next_report:
        st.next_report = now + st.rng.uniform(*REPORT_EVERY_S)
        tenant, camera = st.rng.choice(cams)
        report = resident_report(platform, tenant, camera, st.rng)
        log.info("demo: a resident reports a bear near camera %s → %s", camera["key"], report["id"])
        did["report"] = report
        _maybe_verify(st, tenant, report["id"], now)
    return did
