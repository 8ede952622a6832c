#!/usr/bin/env python3
"""Build the bear evaluation set: trail-camera-like frames made by script (the images are never committed).

Usage::

    python scripts/build_bear_eval.py OUT [--split validation|test|both] [--bears N] [--others N]

writes ``OUT/<split>/bear/*.jpg``, ``OUT/<split>/other/*.jpg``, ``OUT/<split>/ref/*.jpg`` (for each frame an
earlier empty frame of the same camera, same file name) and ``OUT/<split>/labels.csv`` (kind, stamp, subject
size, day/night, partly hidden, box, camera) — the layout ``society5 bench bears --images OUT/<split>`` reads.

Subjects are the photographic cut-outs of Debian's ``tuxpaint-stamps-default`` (``apt-get install
tuxpaint-stamps-default``): two bears; deer, foxes, dogs, a wild boar, badger, hares, squirrels, livestock and
birds; firemen and soldiers; cars, trucks and a tractor. They are pasted onto procedurally generated outdoor
scenes (forest, field, snow; distant tree line, trunks, bushes in front), small and distant or close, partly
hidden behind foreground bushes, with a soft shadow, then given trail-camera effects: night infrared
(greyscale, flash vignette, heavy noise), motion blur on the subject, sensor noise, exposure drift between
the reference and the frame, a timestamp strip at the bottom and JPEG compression. Empty frames (nothing
added, only noise and exposure) are part of ``other``.

Validation and test come from disjoint seeds: different cameras (scenes), placements and effects. With only
two bear photographs in the package both splits necessarily reuse them (in other poses: flipped, scaled,
recoloured, hidden, at night): thresholds are tuned on validation, figures reported on test, nothing is
trained. Without the package (``--synthetic``, or automatically when it is missing) subjects are drawn shapes,
good for a smoke test only.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

STAMPS = Path("/usr/share/tuxpaint/stamps")
SPLIT_SEEDS = {"validation": 1_000_003, "test": 2_000_003}
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
# Share of each kind among the ``other`` frames
OTHER_MIX = (("animal", 0.45), ("person", 0.15), ("vehicle", 0.10), ("empty", 0.30))
SIZES = {"small": (0.06, 0.12), "medium": (0.12, 0.25), "large": (0.25, 0.5)}  # subject height / frame


@dataclass
class Camera:
    """One fixed camera: its scene (background and foreground layers) and look."""

    name: str
    background: np.ndarray  # float32 RGB 0-255
    foreground: np.ndarray  # float32 RGBA: bushes in front of everything
    horizon: int
    night: bool
    kind: str


def _noise_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.random((max(2, h * cells // w), cells)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def make_camera(seed: int, name: str) -> Camera:
    rng = np.random.default_rng(seed)
    h, w = HEIGHT, WIDTH
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
    return Camera(name, np.clip(img, 0, 255), fg, horizon, bool(rng.random() < 0.35), kind)


def _stamp(path: str, rng: random.Random) -> np.ndarray:
    im = Image.open(STAMPS / path).convert("RGBA")
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(im).astype(np.float32)
    box = np.argwhere(arr[..., 3] > 10)
    (y0, x0), (y1, x1) = box.min(0), box.max(0) + 1
    return arr[y0:y1, x0:x1]


def _synthetic(kind: str, rng: random.Random) -> np.ndarray:
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


def _paste(frame: np.ndarray, subject: np.ndarray, x: int, y_feet: int, height: int,
           rng: random.Random, night: bool) -> tuple[int, int, int, int]:
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


def _finish(img: np.ndarray, cam: Camera, rng: random.Random, when: datetime, exposure: float) -> np.ndarray:
    """Foreground layer, then the camera's look: night IR, exposure, noise, timestamp strip."""
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


def _save(path: Path, rgb: np.ndarray, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="JPEG", quality=rng.randint(70, 92))


def build_split(out: Path, split: str, bears: int, others: int, synthetic: bool = False,
                cameras: int = 12) -> Path:
    """Write one split under ``out/split``; returns that folder."""
    synthetic = synthetic or not STAMPS.is_dir()
    base = SPLIT_SEEDS[split]
    rng = random.Random(base)
    cams = [make_camera(base * 100 + i, f"{split[:3]}cam{i:02d}") for i in range(cameras)]
    root = out / split
    rows: list[dict[str, object]] = []
    jobs = [("bear", "bear")] * bears
    for kind, share in OTHER_MIX:
        jobs += [("other", kind)] * round(others * share)
    rng.shuffle(jobs)
    for idx, (truth, kind) in enumerate(jobs):
        cam = cams[idx % len(cams)]
        when = datetime(2025, 5, 1) + timedelta(days=rng.randint(0, 150), seconds=rng.randint(0, 86399))
        frame = cam.background.copy()
        size, occluded, stamp, box = "none", False, "", (0, 0, 0, 0)
        if kind != "empty":
            if kind == "bear":
                stamp = rng.choice(BEARS)
                detail = "bear"
            elif kind == "animal":
                detail = rng.choice(sorted(ANIMALS))
                stamp = rng.choice(ANIMALS[detail])
            elif kind == "person":
                stamp, detail = rng.choice(PEOPLE), "person"
            else:
                stamp, detail = rng.choice(VEHICLES), "vehicle"
            subject = _synthetic(kind, rng) if synthetic else _stamp(stamp, rng)
            size = rng.choice(sorted(SIZES))
            lo, hi = SIZES[size]
            height = int(HEIGHT * rng.uniform(lo, hi))
            if detail in {"hare", "rodent", "bird"}:
                height = max(12, height // 2)
            y_feet = rng.randint(max(cam.horizon + height // 3, int(HEIGHT * 0.5)), int(HEIGHT * 0.93))
            x = rng.randint(int(WIDTH * 0.08), int(WIDTH * 0.92))
            box = _paste(frame, subject, x, y_feet, height, rng, cam.night)
            if box[2] > box[0]:
                occluded = bool((cam.foreground[box[1]:box[3], box[0]:box[2], 3] > 0.5).mean() > 0.1)
            kind_label = detail
        else:
            kind_label = "empty"
        name = f"{split[:3]}_{idx:04d}.jpg"
        exposure_ref = rng.uniform(0.92, 1.08)
        _save(root / truth / name, _finish(frame, cam, rng, when, rng.uniform(0.92, 1.08)), rng)
        earlier = when - timedelta(minutes=rng.randint(5, 240))
        _save(root / "ref" / name, _finish(cam.background.copy(), cam, rng, earlier, exposure_ref), rng)
        rows.append({"file": f"{truth}/{name}", "truth": truth, "kind": kind_label,
                     "stamp": "synthetic" if synthetic and stamp else stamp, "size": size,
                     "night": int(cam.night), "occluded": int(occluded), "camera": cam.name,
                     "scene": cam.kind, "box": " ".join(str(v) for v in box)})
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", choices=["validation", "test", "both"], default="both")
    parser.add_argument("--bears", type=int, default=120)
    parser.add_argument("--others", type=int, default=240)
    parser.add_argument("--cameras", type=int, default=12)
    parser.add_argument("--synthetic", action="store_true", help="drawn subjects (no tuxpaint stamps)")
    args = parser.parse_args(argv)
    if not STAMPS.is_dir() and not args.synthetic:
        print(f"{STAMPS} is missing (apt-get install tuxpaint-stamps-default): drawn subjects instead, "
              "good for a smoke test only", file=sys.stderr)
    for split in (["validation", "test"] if args.split == "both" else [args.split]):
        root = build_split(args.out, split, args.bears, args.others, args.synthetic, args.cameras)
        print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
