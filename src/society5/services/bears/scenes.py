"""Generated trail-camera scenes with photographic subjects: the evaluation set and the demo share them.

A :class:`Camera` is one fixed view (procedural forest, field or snow background, foreground bushes that hide
what walks behind them, day or night infrared look). Subjects are the photographic cut-outs of Debian's
``tuxpaint-stamps-default`` (``/usr/share/tuxpaint/stamps``): bears, deer, foxes, dogs, people, vehicles…;
without the package, :func:`synthetic_subject` draws a stand-in shape. :func:`paste` puts a subject in the
frame (scaled to a height, shadow, motion blur, colour jitter), :func:`finish` applies the camera's look
(foreground, infrared, exposure, sensor noise, timestamp strip).

Used by ``scripts/build_bear_eval.py`` (the evaluation set) and ``simulate`` (the demo's cameras); needs the
``bears`` extra (numpy, OpenCV, Pillow).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

STAMPS = Path("/usr/share/tuxpaint/stamps")
WIDTH, HEIGHT = 1280, 720

BEARS = ["animals/mammals/bears/bear.png", "animals/mammals/bears/european-bear.png"]
ANIMALS = {
    "deer": ["animals/mammals/deer/deer.png", "animals/mammals/deer/doe.png",
             "animals/mammals/deer/caribou.png",
             "animals/mammals/deer/wapiti.png"],
    "fox": ["animals/mammals/dogs/fox.png"],
    "dog": ["animals/mammals/dogs/dog.png", "animals/mammals/dogs/dingo.png"],
    "boar": ["animals/mammals/wildboar.png", "animals/mammals/pig.png"],
    "badger": ["animals/mammals/badger.png", "animals/mammals/ferret.png"],
    "hare": ["animals/mammals/rodents/rabbit.png", "animals/mammals/rodents/rabbit-2.png"],
    "rodent": ["animals/mammals/rodents/squirrel.png", "animals/mammals/rodents/marmot.png",
               "animals/mammals/rodents/beaver.png"],
    "livestock": ["animals/mammals/bovines/cow.png", "animals/mammals/bovines/sheep.png",
                  "animals/mammals/equines/horse.png", "animals/mammals/bovines/goat.png"],
    "bird": ["animals/birds/crow.png", "animals/birds/owl.png", "animals/birds/heron_greatblue.png",
             "animals/birds/duck.png"],
}
PEOPLE = ["people/fireman200b.png", "people/fireman240a.png", "military/paratrooper.png",
          "military/final-roll-call.png"]
VEHICLES = ["vehicles/auto/sedan.png", "vehicles/auto/beetle.png", "vehicles/auto/truck.png",
            "vehicles/auto/sportscar2.png", "vehicles/emergency/sedan_police.png",
            "vehicles/wheel_tractor.png", "vehicles/construction/dumper.png", "vehicles/garbagetruck.png"]


@dataclass
class Camera:
    """One fixed camera: its scene (background and foreground layers) and look."""

    name: str
    background: np.ndarray  # float32 RGB 0-255
    foreground: np.ndarray  # float32 RGBA: bushes in front of everything
    horizon: int
    night: bool
    kind: str


def have_stamps() -> bool:
    return (STAMPS / BEARS[0]).is_file()


def _noise_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.random((max(2, h * cells // w), cells)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def make_camera(seed: int, name: str, width: int = WIDTH, height: int = HEIGHT,
                night: bool | None = None) -> Camera:
    """A camera's scene from ``seed`` (the same seed, the same scene); ``night`` forces the look."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    kind = ["forest", "field", "snow"][int(rng.integers(3))]
    horizon = int(h * rng.uniform(0.22, 0.45))
    img = np.zeros((h, w, 3), np.float32)
    sky_top = np.array([120, 160, 215]) if rng.random() < 0.6 else np.array([185, 190, 195])
    sky_bottom = sky_top * 0.6 + 255 * 0.4
    t = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = sky_top * (1 - t) + sky_bottom * t
    if kind == "snow":
        ground = np.array([228, 232, 240]) * rng.uniform(0.8, 1.0)
        dark = np.array([150, 160, 175])
    elif kind == "field":
        ground = np.array([rng.uniform(90, 140), rng.uniform(120, 160), rng.uniform(50, 80)])
        dark = ground * 0.5
    else:
        ground = np.array([rng.uniform(70, 100), rng.uniform(75, 105), rng.uniform(40, 60)])
        dark = ground * 0.45
    low = _noise_field(rng, h - horizon, w, 12)[..., None]
    fine = rng.random((h - horizon, w, 1)).astype(np.float32)
    img[horizon:] = ground * (0.75 + 0.35 * low) * (0.85 + 0.15 * fine) + dark * 0.0
    # distant tree line
    line = (_noise_field(rng, 1, w, 40)[0] * h * 0.12 + h * 0.03).astype(int)
    tree_colour = np.array([40, 60, 40]) if kind != "snow" else np.array([60, 70, 65])
    for x in range(w):
        img[max(0, horizon - line[x]):horizon + 2, x] = tree_colour * rng.uniform(0.8, 1.2)
    # trunks and canopies
    trunks = int(rng.integers(2, 9)) if kind == "forest" else int(rng.integers(0, 3))
    for _ in range(trunks):
        x = int(rng.integers(0, w))
        tw = int(rng.integers(10, 60))
        base = int(rng.integers(horizon + 20, h))
        colour = np.array([70, 55, 40]) * rng.uniform(0.5, 1.1)
        cv2.rectangle(img, (x, 0), (x + tw, base), colour.tolist(), -1)
        if kind != "snow" or rng.random() < 0.5:
            leaf = np.array([30, 70, 30]) * rng.uniform(0.6, 1.3)
            cv2.ellipse(img, (x + tw // 2, int(rng.integers(0, horizon + 1))),
                        (int(rng.integers(60, 220)), int(rng.integers(50, 160))), 0, 0, 360,
                        leaf.tolist(), -1)
    # foreground bushes (in front of subjects)
    fg = np.zeros((h, w, 4), np.float32)
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(int(h * 0.6), h))
        green = np.array([45, 85, 35]) if kind != "snow" else np.array([200, 205, 215])
        colour = green * rng.uniform(0.7, 1.2)
        axes = (int(rng.integers(60, 220)), int(rng.integers(40, 120)))
        cv2.ellipse(fg, (cx, cy), axes, 0, 180, 360, [*colour.tolist(), 1.0], -1)
    mask = fg[..., 3:4] > 0
    tex = 0.75 + 0.5 * rng.random((h, w, 1)).astype(np.float32)
    fg[..., :3] = np.where(mask, fg[..., :3] * tex, 0)
    fg[..., 3] = cv2.GaussianBlur(fg[..., 3], (5, 5), 0)
    is_night = bool(rng.random() < 0.35)
    return Camera(name, np.clip(img, 0, 255), fg, horizon, is_night if night is None else night, kind)


def load_stamp(path: str, rng: random.Random) -> np.ndarray:
    """A stamp (path under :data:`STAMPS`) as float32 RGBA cropped to its subject, flipped half the time."""
    im = Image.open(STAMPS / path).convert("RGBA")
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(im).astype(np.float32)
    box = np.argwhere(arr[..., 3] > 10)
    (y0, x0), (y1, x1) = box.min(0), box.max(0) + 1
    return arr[y0:y1, x0:x1]


def synthetic_subject(kind: str, rng: random.Random) -> np.ndarray:
    """A drawn stand-in subject (no Debian package): a body and a head in the kind's colour."""
    w, h = (200, 130) if kind != "person" else (70, 200)
    arr = np.zeros((h, w, 4), np.float32)
    colour = {"bear": (60, 40, 25), "animal": (150, 100, 60), "person": (40, 60, 160),
              "vehicle": (180, 30, 30)}.get(kind, (100, 100, 100))
    if kind == "person":
        cv2.rectangle(arr, (15, 40), (55, 200), (*colour, 255), -1)
        cv2.circle(arr, (35, 22), 20, (220, 180, 150, 255), -1)
    else:
        cv2.ellipse(arr, (100, 75), (85, 45), 0, 0, 360, (*colour, 255), -1)
        cv2.circle(arr, (175 if rng.random() < 0.5 else 25, 45), 28, (*colour, 255), -1)
    return arr


def paste(frame: np.ndarray, subject: np.ndarray, x: int, y_feet: int, height: int,
          rng: random.Random, night: bool) -> tuple[int, int, int, int]:
    """Paste ``subject`` (RGBA) into ``frame`` (float32, in place) standing at ``(x, y_feet)``; returns the
    box it covers in the frame."""
    sh, sw = subject.shape[:2]
    scale = height / sh
    tw, th = max(2, int(sw * scale)), max(2, height)
    sub = cv2.resize(subject, (tw, th), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    if rng.random() < 0.3:  # moving: motion blur along x
        k = max(3, int(tw * rng.uniform(0.02, 0.06)) | 1)
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0 / k
        sub = cv2.filter2D(sub, -1, kernel)
    # colour and brightness jitter (fur in other light)
    sub[..., :3] *= np.array([rng.uniform(0.8, 1.15) for _ in range(3)]) * rng.uniform(0.75, 1.15)
    H, W = frame.shape[:2]
    x0, y0 = x - tw // 2, y_feet - th
    # soft shadow on the ground
    shadow = np.zeros((H, W), np.float32)
    cv2.ellipse(shadow, (x, y_feet), (max(2, tw // 2), max(1, th // 12)), 0, 0, 360, 0.35, -1)
    shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, th / 30))
    frame *= 1 - shadow[..., None] * (0.4 if night else 1.0)
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + tw, W), min(y0 + th, H)
    if fx1 <= fx0 or fy1 <= fy0:
        return (0, 0, 0, 0)
    part = sub[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    alpha = part[..., 3:4] / 255.0
    frame[fy0:fy1, fx0:fx1] = frame[fy0:fy1, fx0:fx1] * (1 - alpha) + np.clip(part[..., :3], 0, 255) * alpha
    return (fx0, fy0, fx1, fy1)


def finish(img: np.ndarray, cam: Camera, rng: random.Random, when: datetime, exposure: float) -> np.ndarray:
    """Foreground layer, then the camera's look: night IR, exposure, noise, timestamp strip (uint8 RGB)."""
    fg = cam.foreground
    img = img * (1 - fg[..., 3:4]) + fg[..., :3] * fg[..., 3:4]
    h, w = img.shape[:2]
    if cam.night:
        grey = img[..., 0] * 0.25 + img[..., 1] * 0.6 + img[..., 2] * 0.15
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        vignette = np.exp(-(((xx - w / 2) / (w * 0.55)) ** 2 + ((yy - h * 0.6) / (h * 0.6)) ** 2))
        grey = grey * (0.35 + 0.75 * vignette) * 0.9
        img = np.repeat(grey[..., None], 3, axis=2)
        sigma = rng.uniform(6, 12)
    else:
        sigma = rng.uniform(2, 6)
    img = img * exposure
    img = img + np.random.default_rng(rng.getrandbits(32)).normal(0, sigma, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    strip = int(h * 0.05)
    out[h - strip:] = 0
    text = f"{when:%Y/%m/%d %H:%M:%S}  {rng.randint(-5, 25)}C  {cam.name.upper()}"
    cv2.putText(out, text, (10, h - strip // 4), cv2.FONT_HERSHEY_SIMPLEX, strip / 40, (255, 255, 255), 2)
    return out
